"""Process launch: make the ranks (or find that a launcher already did) and join the process group.

Three ways a rank comes to exist, all ending in the same worker:
- ``python run.py`` with world size > 1: :func:`spawn` starts ``nproc_per_node`` ranks through
  torch's own elastic launcher (what torchrun uses), from inside the Hydra task.
- ``torchrun ... run.py``: torchrun made the ranks (RANK/WORLD_SIZE set); nothing is spawned.
- submitit tasks (``-m hydra/launcher=slurm|local``): each task is a rank; :func:`init_distributed`
  exports the torch env.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_exp.config.dist import DistConfig
from olmo_exp.config.topology import available_cpus, backend_for, topology
from olmo_exp.runtime.console import RANK_OUTPUT_ENV

if TYPE_CHECKING:  # torch only where ranks are started
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

log = logging.getLogger(__name__)


class RankFailedError(RuntimeError):
    """A rank of a spawned job failed; the message names the first (root-cause) rank."""


# What init_distributed changed in this process, undone by teardown() (a test or notebook may
# run several jobs in one process; leftover RANK/WORLD_SIZE would make the next look "launched").
_saved_env: dict[str, str | None] = {}
_saved_timeouts: dict[str, Any] = {}
_exit_stack: contextlib.ExitStack | None = None


def _set_env(key: str, value: str, *, override: bool = True) -> None:
    if not override and key in os.environ:
        return
    _saved_env.setdefault(key, os.environ.get(key))
    os.environ[key] = value


def _threads_per_rank(local_ranks: int) -> int:
    """The CPUs this rank was given: SLURM's --cpus-per-task, else this process's CPU affinity
    (a cgroup/cpuset or a SLURM allocation, not the whole machine) shared by the local ranks."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    if per_task and per_task.isdigit():
        return max(1, int(per_task))
    return max(1, available_cpus() // max(local_ranks, 1))


def init_distributed(cfg: DistConfig, *, seed: int) -> None:
    """Join the job's process group (if any) with a finite timeout, seed, and install FSDP hooks."""
    global _exit_stack
    import torch
    import torch.distributed.distributed_c10d as c10d
    from olmo_core.train import prepare_training_environment

    world = topology(cfg)
    launched = world.launched
    local_ranks = world.nproc_per_node
    # olmo-core sets 8 threads when unset: oversubscribes small hosts. torch is already imported
    # here, so the env var alone would not take effect in this process.
    _set_env("OMP_NUM_THREADS", str(_threads_per_rank(local_ranks)), override=False)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    if launched is not None and launched.kind != "torchrun":
        # SLURM/submitit task: export RANK/WORLD_SIZE/MASTER_*; keep CUDA_VISIBLE_DEVICES (the
        # default per-task value breaks olmo-core's cuda.set_device(LOCAL_RANK)).
        from submitit.helpers import TorchDistributedEnvironment

        before = {k: os.environ.get(k) for k in _TORCH_ENV}
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        for k, v in before.items():
            _saved_env.setdefault(k, v)
    if launched is not None:
        _set_env("NUM_NODES", str(launched.num_nodes), override=False)
    # All ranks share the run dir's filesystem (one checkpoint/data-index dir).
    _set_env("OLMO_SHARED_FS", "1")

    backend = backend_for(cfg, world)
    timeout = timedelta(seconds=cfg.timeout_s)
    if backend is not None:
        # olmo-core's extra groups (bookkeeping, checkpointing) are made with new_group() and no
        # timeout, i.e. torch's 30-min default: bound those too, so a hung rank fails the job.
        _saved_timeouts.setdefault("default_pg_timeout", c10d.default_pg_timeout)
        _saved_timeouts.setdefault("default_pg_nccl_timeout", c10d.default_pg_nccl_timeout)
        c10d.default_pg_timeout = timeout
        c10d.default_pg_nccl_timeout = timeout
        before = {k: os.environ.get(k) for k in _TORCH_ENV}  # olmo-core bootstraps these for 1 rank
        for k, v in before.items():
            _saved_env.setdefault(k, v)

    # prepare_training_environment replaces the root handlers (basicConfig(force=True)): keep file
    # logs (e.g. Hydra's job log) that were attached before.
    root = logging.getLogger()
    file_handlers = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    prepare_training_environment(seed=seed, backend=backend, timeout=timeout,
                                 shared_filesystem=True)
    for h in file_handlers:
        if h not in root.handlers:
            root.addHandler(h)

    _exit_stack = contextlib.ExitStack()
    _exit_stack.enter_context(fsdp_hooks(cfg, on_gpu=world.on_gpu))
    if backend is not None:
        log.info("joined %s process group (timeout %ds, %s threads per rank)", backend,
                 cfg.timeout_s, os.environ["OMP_NUM_THREADS"])


_TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "NUM_NODES", "OLMO_SHARED_FS", "TORCH_DIST_INIT_BARRIER",
              "TORCH_NCCL_AVOID_RECORD_STREAMS")


def teardown() -> None:
    """Leave the process group, remove the FSDP hooks, restore the environment."""
    global _exit_stack
    from olmo_core.train import teardown_training_environment

    try:
        teardown_training_environment()
    finally:
        if _exit_stack is not None:
            _exit_stack.close()
            _exit_stack = None
        for key, value in _saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _saved_env.clear()
        if _saved_timeouts:
            import torch.distributed.distributed_c10d as c10d

            for name, value in _saved_timeouts.items():
                setattr(c10d, name, value)
            _saved_timeouts.clear()


# olmo-core modules that call FSDP2's fully_shard (imported by name, so patch them there).
_FULLY_SHARD_MODULES = ("olmo_core.nn.transformer.model", "olmo_core.nn.transformer.block")


@contextlib.contextmanager
def fsdp_hooks(cfg: DistConfig, *, on_gpu: bool) -> Iterator[None]:
    """Apply ``cfg.fsdp_overrides()`` to every ``fully_shard`` olmo-core makes inside the block.

    Smallest hook for two knobs olmo-core 3.0 lacks: ``Transformer.apply_fsdp`` hard-codes
    ``reshard_after_forward=True`` (so no SHARD_GRAD_OP), and the train module's ``cpu_offload``
    is a checkpoint-saving option, not FSDP2's ``CPUOffloadPolicy``. Wrapping the ``fully_shard``
    name that olmo-core's model/block modules call changes only those kwargs (SHARD_GRAD_OP was
    bitwise equal to FULL_SHARD here). Without overrides nothing is patched.
    """
    overrides = cfg.fsdp_overrides(on_gpu)
    if not overrides:
        yield
        return
    import importlib

    modules = [importlib.import_module(name) for name in _FULLY_SHARD_MODULES]
    originals = [m.fully_shard for m in modules]
    original = originals[0]

    def fully_shard(module: Any, **kwargs: Any) -> Any:
        return original(module, **{**kwargs, **overrides})

    for m in modules:
        m.fully_shard = fully_shard
    try:
        yield
    finally:
        for m, f in zip(modules, originals, strict=True):
            m.fully_shard = f


def spawn(fn: Callable[..., Any], args: tuple, *, nproc: int, log_dir: Path) -> None:
    """Run ``fn(*args)`` on ``nproc`` local ranks with torch's elastic launcher; wait for all.

    ``fn`` must be module-level and ``args`` picklable (start method "spawn"). No restarts: over
    gloo they fail to reconnect and hide the original error. A failing rank takes the others
    down (torch elastic stops the group) and raises :class:`RankFailedError` naming it.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex[:12],
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port: concurrent jobs on one host don't collide
        max_restarts=0,
        start_method="spawn",
        monitor_interval=0.1,
        # Rank 0 writes to this console itself (no "[default0]:" prefixes, a progress bar on a
        # terminal); the others only to log_dir, and a failing one is named by RankFailedError.
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), tee=Std.NONE, redirects={
            rank: Std.NONE if rank == 0 else Std.ALL for rank in range(nproc)}),
    )
    # The launcher API (unlike the torchrun CLI) passes the parent's env on unchanged.
    restore = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads_per_rank(nproc)))
    os.environ[RANK_OUTPUT_ENV] = "files"
    try:
        elastic_launch(config, fn)(*args)
    except SignalException as e:
        # Ctrl-C / kill reached this launcher too: it passed the signal on and waited (30 s) for
        # the ranks, which stop after their step, save it and say so. The shell's exit code.
        raise SystemExit(128 + int(e.sigval)) from None
    except ChildFailedError as e:
        if all(f.exitcode in (130, 143) for f in e.failures.values()):  # stopped by a signal
            raise SystemExit(max(f.exitcode for f in e.failures.values())) from None
        raise RankFailedError(_failure_message(e, nproc, log_dir)) from None
    finally:
        os.environ.pop(RANK_OUTPUT_ENV, None)
        if restore is None:
            os.environ.pop("OMP_NUM_THREADS", None)


_ECHOES = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
           "gloo", "nccl", "distbackenderror", "processgroup", "sigterm", "sigint")


def is_echo(cause: str) -> bool:
    """A rank's failure that only echoes another's (a collective that lost its peer, the launcher's
    signal stopping the group): never reported as the root cause if a real one exists."""
    return any(word in cause.lower() for word in _ECHOES)


def _cause(failure: ProcessFailure) -> str:
    """One line: the exception in the error file torch's ``record`` wrote, else how the rank ended."""
    if isinstance(failure.message, dict):  # "SomeError: what", maybe a module repr on more lines
        first = str(failure.message.get("message", "")).strip().partition("\n")[0]
        if first:
            return first if len(first) <= 300 else first[:297] + "..."
    if failure.exitcode < 0:
        return f"killed by {failure.signal_name()}"
    return f"exited with code {failure.exitcode} without a Python traceback (os._exit, OOM kill, crash)"


def _failure_message(e: ChildFailedError, nproc: int, log_dir: Path) -> str:
    causes = {rank: _cause(failure) for rank, failure in e.failures.items()}
    # torch's get_first_failure() is the earliest timestamp, in whole seconds: a peer's echo of the
    # failure lands in the same second, so the echoes go last.
    rank = min(causes, key=lambda r: (is_echo(causes[r]), e.failures[r].timestamp, r))
    others = "; ".join(f"rank {r}: {c}" for r, c in sorted(causes.items()) if r != rank)
    return (f"rank {rank} of {nproc} failed first (pid {e.failures[rank].pid}): {causes[rank]}"
            + (f" | then {others}" if others else "") + f" | per-rank logs: {log_dir}")
