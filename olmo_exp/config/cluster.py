"""The ``cluster`` group: one SLURM profile (partition, account, GPUs, time limit, setup lines, ...)
that every ``-m hydra/launcher=slurm`` command picks up, and what SLURM says about a partition.

A profile is a file ``cluster/<name>.yaml`` on Hydra's search path: ``conf/cluster/`` (shipped
ones) and the user's own directory (``$OLMO_EXP_CONFIG_DIR``, default ``~/.config/olmo-exp``; see
:mod:`olmo_exp.cli.registry`). ``conf/config.yaml`` loads ``cluster/default.yaml`` when one exists,
so a profile written there once applies to every command; ``cluster=NAME`` picks another.
``conf/hydra/launcher/slurm.yaml`` reads these keys; an explicit ``hydra.launcher.KEY=...`` wins.

The GPUs a job asks for default to what the partition's nodes have (``sinfo``'s GRES): a job on a
GPU partition gets one rank per GPU without saying so, a CPU partition none. Reading the cluster
is cheap (one ``sinfo`` per partition and process) and needs no torch.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The user's directory of config groups (cluster/<name>.yaml, ...), added to Hydra's search path.
USER_DIR_ENV = "OLMO_EXP_CONFIG_DIR"
USER_DIR_DEFAULT = "~/.config/olmo-exp"


def user_config_dir() -> Path:
    """The user's own config groups (``cluster/default.yaml``, ...): ``$OLMO_EXP_CONFIG_DIR``,
    default ``~/.config/olmo-exp``; outside the repository, so a profile survives checkouts."""
    return Path(os.path.expanduser(os.environ.get(USER_DIR_ENV) or USER_DIR_DEFAULT))


def profile_file(name: str | None, conf_dir: Path) -> Path | None:
    """The file of cluster profile ``name``, as Hydra finds it (conf/ first), or None."""
    if not name:
        return None
    for root in (conf_dir, user_config_dir()):
        path = root / "cluster" / f"{name}.yaml"
        if path.is_file():
            return path
    return None


@dataclass
class ClusterConfig:
    """sbatch settings of every SLURM job (``hydra.launcher.*`` reads them); null = SLURM's default."""

    partition: str | None = None
    """null = the cluster's default partition."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    """null = what the partition's nodes have (sinfo GRES, ``gpu:N``; 1 for dist=single, one per
    rank when dist.nproc_per_node is set); 0 = none."""
    cpus_per_task: int | None = None
    """CPUs per rank (threads per rank follow it)."""
    mem_gb: int | None = None
    """Memory per node."""
    timeout_min: int = 60
    signal_delay_s: int = 120
    """USR2 this long before the time limit: checkpoint the current step, requeue."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the job before the ranks start (module load, activate a venv, ...)."""


# -- what SLURM says -------------------------------------------------------------------------------


def gres_gpus(gres: str) -> int:
    """GPUs per node in one sinfo ``%G`` field: ``gpu:2`` -> 2, ``gpu:a100:8(S:0-1),mps:100`` -> 8,
    ``(null)`` -> 0."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):  # commas outside (S:0-1) socket lists
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


@functools.cache
def partition_gpus(partition: str | None) -> int | None:
    """GPUs per node of ``partition`` (None: the default one) as ``sinfo`` reports them; nodes that
    differ give the smallest count (a job must fit on any of them). None when SLURM cannot say
    (no sinfo here, or no such partition: sbatch will name the problem)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts: list[int] = []
    for line in out.splitlines():
        name, _, gres = line.strip().partition("|")
        default = name.endswith("*")
        if (partition is None and default) or name.rstrip("*") == partition:
            counts.append(gres_gpus(gres))
    return min(counts) if counts else None


# -- resolvers of conf/hydra/launcher/slurm.yaml ---------------------------------------------------


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


def default_gpus_per_node(profile: int | None, nproc_per_node: int | None, strategy: Any,
                          partition: str | None) -> int | None:
    """GPUs a job asks for per node: the profile's, else from the partition's GRES: one per rank
    (dist.nproc_per_node), one for dist=single, else every GPU of a node; None = no GPUs."""
    if profile is not None:
        return int(profile)
    gpus = partition_gpus(partition)
    if not gpus:
        return None
    if nproc_per_node is not None:
        return int(nproc_per_node)
    return 1 if _strategy(strategy) == "single" else gpus


def tasks_per_node(nproc_per_node: int | None, gpus_per_node: int | None,
                   strategy: Any = "fsdp") -> int:
    """One task = one rank: ``dist.nproc_per_node``; null = one per GPU (1 for dist=single), or 1
    without GPUs."""
    if nproc_per_node is not None:
        return int(nproc_per_node)
    if _strategy(strategy) == "single":
        return 1
    return max(int(gpus_per_node or 0), 1)
