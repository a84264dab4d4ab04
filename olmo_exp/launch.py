"""Process launch: make the ranks (or find that a launcher already did) and join the process group."""

from __future__ import annotations

import os

from olmo_exp.dist import DistConfig


def already_launched() -> bool:
    """True inside torchrun/SLURM-started ranks."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(cfg: DistConfig, *, seed: int) -> None:
    from olmo_core.train import prepare_training_environment

    # olmo-core would set 8 threads; on small CPU machines that oversubscribes.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1))))
    prepare_training_environment(seed=seed, backend=None)


def teardown() -> None:
    from olmo_core.train import teardown_training_environment

    teardown_training_environment()
