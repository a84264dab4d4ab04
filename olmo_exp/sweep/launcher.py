"""Sweeps as cluster jobs: ``python run.py -m hydra/launcher=slurm ...`` (or ``=local``) through submitit.

The launchers here extend hydra-submitit-launcher's (``conf/hydra/launcher/*.yaml`` name them in
``_target_``). What they add, in the submitting process (:meth:`_SweepLauncher.launch`):

- every point of the sweep is composed and validated (``RunConfig.validate``, with the job's rank
  layout) before anything is submitted: an invalid point stops the sweep with one line, exit 2,
  nothing queued and no sweep directory left behind; so does ``hydra/launcher=slurm`` off a cluster;
- points are grouped by their resolved launcher settings (``nodes: ${dist.nodes}`` may differ per
  point), one submitit array per group;
- the command waits for every job, requeued ones included; each failed job is reported on one line
  (state, the run's own one-line cause, log path) and the others still run; exit code 1 at the end.

And in each job task (:meth:`_SweepLauncher.__call__`): the time-limit/preemption signal (USR2,
``signal_delay_s`` before the limit) only sets a flag; the training loop stops on all ranks after the
same step (:class:`olmo_exp.runtime.callbacks.StopOnSignalCallback`), olmo-core's checkpointer saves that step, and
then submitit's own handler requeues the job (:func:`olmo_exp.runtime.preemption.requeue_if_signaled`). The requeued job
resumes from the latest checkpoint in its run directory.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import remove_created_dir
from olmo_exp.config import topology as topo
from olmo_exp.config.cluster import check_partition_gpus, loader_cpus_notice
from olmo_exp.config.compose import register_resolvers, register_schemas, run_config
from olmo_exp.data.check import check_run
from olmo_exp.runtime import preemption
from olmo_exp.sweep.failures import (
    cause_from_log,
    count_requeues,
    exception_line,
    one_line,
    root_cause,
    write_error_file,
)

log = logging.getLogger(__name__)

# Resolvers of conf/hydra/launcher/*.yaml, also in job processes, which unpickle these launchers.
register_resolvers()


# -- the launchers --------------------------------------------------------------------------------


class LaunchRejected(Exception):
    """One line: why the sweep was not submitted."""


@dataclass
class _Point:
    num: int
    overrides: list[str]
    params: dict[str, Any]
    shown: str = ""
    """The point's own overrides (those not shared by every point), for one-line messages."""
    run_dir: Path | None = None
    """Where the job's run directory is (the sweep dir + the job's subdir)."""
    notice: str = ""
    """One line about the job's resources, printed once per sweep (the same for many points)."""


def _shown_overrides(overrides: list[str], all_points: Sequence[Sequence[str]]) -> str:
    common = set.intersection(*(set(p) for p in all_points)) if len(all_points) > 1 else set()
    own = [o for o in filter_overrides(overrides) if o not in common]
    return " ".join(own) or "(no overrides)"


@dataclass
class _Submitted:
    point: _Point
    job: Any
    done: bool = False
    result: JobReturn | None = None
    state: str = ""
    cause: str = ""
    log_path: str = ""
    requeues: int = 0


class FailedJobReturn(JobReturn):
    """A failed job, already reported by the launcher: reading ``return_value`` does not raise.

    Hydra's BasicSweeper raises on the first failed job's return value, which would skip
    ``on_multirun_end`` (sweep reports) and print a traceback. The launcher reports each failure
    on one line instead and run.py exits non-zero at the end (:func:`sweep_exit_code`).
    """

    @property
    def return_value(self) -> Any:
        return self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


_failed_jobs: list[str] = []


def record_failure(line: str) -> None:
    """One failed job: its line now, exit code 1 at the end (the other jobs still run)."""
    _failed_jobs.append(line)
    print(line, file=sys.stderr, flush=True)


def sweep_exit_code() -> int:
    """1 when a job of this process's sweep failed (each already reported), else 0."""
    return 1 if _failed_jobs else 0


class _SweepLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's launcher with validation first, per-point resources, one-line
    failures and requeue-safe waiting (see the module docstring).

    ``launch`` is ours, not the base class's: the base resolves one set of resources for the whole
    sweep (``nodes: ${dist.nodes}`` can differ per point), submits before anything is validated,
    and waits with ``job.results()``, which raises on the first failed job and returns a requeued
    job's pickled failure. ``__call__`` (in the job) is the base class's, after our registration
    and the time-limit handler."""

    poll_s: float = 1.0
    state_refresh_s: float = 10.0

    # -- submitting process ------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        """The sweep, in four steps:

        1. :meth:`_prepare` every point: compose it as its job will, resolve its resources,
           validate it with its job's layout; any invalid point: every error line, exit 2,
           nothing submitted, no sweep dir left;
        2. :meth:`_submit` one submitit array per set of resources;
        3. :meth:`_wait` until every job has ended for good (a requeued job is pending, not ended),
           :meth:`_finish` reporting each failure on one line as it ends;
        4. one JobReturn per point for Hydra's sweeper (:meth:`_job_return`).
        """
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        points: list[_Point] = []
        errors: list[str] = []
        try:
            self._check_available()
            for i, o in enumerate(job_overrides):  # every point, so every invalid one is named
                try:
                    points.append(self._prepare(initial_job_idx + i, list(o), job_overrides))
                except (LaunchRejected, ConfigError) as e:
                    errors.append(f"error: {e}")
        except (LaunchRejected, ConfigError) as e:
            errors = [f"error: {e}"]
        if errors:  # the same line for every point (a partition's nodes, say) once
            print("\n".join(dict.fromkeys(errors)), file=sys.stderr)
            _remove_unstarted_sweep_dir(sweep_dir)
            sys.exit(2)
        for notice in dict.fromkeys(p.notice for p in points if p.notice):
            log.warning("%s", notice)
        submitted = self._submit(points, sweep_dir)
        self._wait(submitted)
        return [self._job_return(s) for s in submitted]

    def _check_available(self) -> None:
        """Overridden by the SLURM launcher."""

    def _prepare(self, num: int, overrides: list[str],
                 all_points: Sequence[Sequence[str]]) -> _Point:
        """Compose the point as its job will, resolve its launcher settings, validate its config."""
        assert self.hydra_context is not None and self.config is not None
        sweep_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_cfg.hydra.job):
            sweep_cfg.hydra.job.num = num
        check_partition_gpus(sweep_cfg.hydra.launcher)  # a partition of nodes that differ
        params = OmegaConf.to_container(sweep_cfg.hydra.launcher, resolve=True)
        assert isinstance(params, dict)
        params.pop("_target_", None)
        config = run_config(sweep_cfg)  # what the task function will receive
        if "setup" in params and params["setup"] is None:  # see conf/hydra/launcher/slurm.yaml
            params["setup"] = list(config.cluster.setup)
        shown = _shown_overrides(overrides, all_points)
        try:
            validate_for_layout(config, nodes=int(params["nodes"]),
                                tasks_per_node=int(params["tasks_per_node"]), kind=self._EXECUTOR,
                                gpus_per_node=int(params.get("gpus_per_node") or 0))
        except ConfigError as e:
            raise LaunchRejected(f"sweep point #{num} ({shown}): {e}") from None
        run_dir = Path(str(sweep_cfg.hydra.sweep.dir)) / str(sweep_cfg.hydra.sweep.subdir)
        notice = loader_cpus_notice(config.train.num_workers, params.get("cpus_per_task")) \
            if self._EXECUTOR == "slurm" else ""  # local jobs share this machine's CPUs
        return _Point(num, overrides, params, shown, run_dir, notice)

    def _submit(self, points: list[_Point], sweep_dir: Path) -> list[_Submitted]:
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        groups: dict[str, list[_Point]] = {}
        for p in points:
            groups.setdefault(json.dumps(p.params, sort_keys=True, default=str), []).append(p)
        base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        submitted: list[_Submitted] = []
        for group in groups.values():
            params = dict(group[0].params)
            if not params.get("gpus_per_node"):
                params.pop("gpus_per_node", None)  # none requested (a gres of 0 fails on CPU clusters)
            folder = params.pop("submitit_folder")
            init: dict[str, Any] = {"folder": folder}
            if "max_num_timeout" in params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            executor.update_parameters(**executor_parameters(params, base_keys, self._EXECUTOR))
            # What each job asks for, in one line (the submission script has it as #SBATCH lines).
            log.info("%d job(s): %s", len(group), " ".join(
                f"{k}={params.get(k)}" for k in _SHOWN if k in params or k == "gpus_per_node"))
            for p in group:
                log.info("\t#%d : %s", p.num, " ".join(filter_overrides(p.overrides)))
            try:
                jobs = executor.map_array(
                    self, [p.overrides for p in group], ["hydra.sweep.dir"] * len(group),
                    [p.num for p in group], [f"job_id_for_{p.num}" for p in group],
                    [Singleton.get_state()] * len(group),
                )
            except Exception as e:  # sbatch refused the request: its own message, one line
                if submitted:
                    raise
                print(f"error: submission failed: {one_line(str(e))}", file=sys.stderr)
                _remove_unstarted_sweep_dir(sweep_dir)
                sys.exit(2)
            submitted += [_Submitted(p, j) for p, j in zip(group, jobs, strict=True)]
        return sorted(submitted, key=lambda s: s.point.num)

    def _wait(self, submitted: list[_Submitted]) -> None:
        """Until every job is finished for good (requeued jobs are pending, not finished)."""
        last_refresh = time.monotonic()
        while not all(s.done for s in submitted):
            time.sleep(self.poll_s)
            force = time.monotonic() - last_refresh > self.state_refresh_s
            if force:
                last_refresh = time.monotonic()
            for s in submitted:
                if not s.done and s.job.done(force_check=force):
                    self._finish(s)
                    force = False  # one sacct call refreshes every job

    def _finish(self, s: _Submitted) -> None:
        s.done = True
        job = s.job
        s.log_path = str(job.paths.stderr)
        s.requeues = count_requeues(job)
        shown = s.point.shown
        task_results: list[tuple[int, JobReturn | None, str]] = []
        for task in range(job.num_tasks):
            sub = job.task(task)
            try:
                ret = sub.result()
                cause = "" if ret.status == JobStatus.COMPLETED else exception_line(ret._return_value)
                task_results.append((task, ret, cause))
            except Exception:  # no result: the task exited (sys.exit, signal, kill, node failure)
                task_results.append((task, None, cause_from_log(sub)))
        s.result = task_results[0][1]
        failed = [(t, c) for t, r, c in task_results if r is None or r.status != JobStatus.COMPLETED]
        try:
            s.state = job.state
        except Exception:  # noqa: BLE001 - state is informative only
            s.state = "UNKNOWN"
        again = f" (requeued {s.requeues}x)" if s.requeues else ""
        if s.result is not None and s.result.status == JobStatus.COMPLETED and not failed:
            log.info("job #%d [%s] COMPLETED%s: %s", s.point.num, job.job_id, again, shown)
            return
        task, cause = root_cause(failed)
        s.log_path = str(job.task(task).paths.stderr)
        # A job whose task raised still "completes" as far as the scheduler is concerned.
        state = s.state if s.state not in ("COMPLETED", "FINISHED", "UNKNOWN", "") else "FAILED"
        s.cause = cause
        line = (f"error: job #{s.point.num} [{job.job_id}] ({shown}) failed ({state}{again}): "
                f"{cause} | log: {s.log_path}")
        record_failure(line)
        # The report reads each job from its run dir alone: a job that failed before its run wrote
        # anything (a rejected run removes its own dir) still gets its first error line.
        if s.point.run_dir is not None:
            write_error_file(s.point.run_dir, f"{cause}\nstate: {state}{again}; log: {s.log_path}\n",
                             keep=True)


    def _job_return(self, s: _Submitted) -> JobReturn:
        if s.result is not None and not s.cause:
            return s.result
        ret = FailedJobReturn()
        ret.overrides = s.point.overrides
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(s.cause or "the job failed")
        if s.result is not None:
            ret.cfg, ret.hydra_cfg = s.result.cfg, s.result.hydra_cfg
            ret.working_dir, ret.task_name = s.result.working_dir, s.result.task_name
        return ret

    # -- job process -------------------------------------------------------------------------

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Singleton]) -> JobReturn:
        # This process never ran run.py's module code: the resolvers and schemas first; then the
        # time-limit handler (after submitit's own, which it wraps). The rest is the base class's.
        register_schemas()
        preemption.install_handler()
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)


class SlurmLauncher(_SweepLauncher):
    _EXECUTOR = "slurm"

    def _check_available(self) -> None:
        if shutil.which("sbatch") is None:
            raise LaunchRejected(
                "hydra/launcher=slurm needs SLURM's sbatch, which is not on PATH here; use "
                "hydra/launcher=local to run the jobs on this machine (or bash "
                "tests/slurm/cluster.sh up for a one-machine cluster)")


class LocalLauncher(_SweepLauncher):
    _EXECUTOR = "local"


def executor_parameters(params: dict[str, Any], shared: set[str], executor: str) -> dict[str, Any]:
    """The launcher's settings as submitit's AutoExecutor names them: the settings every
    executor knows (hydra-submitit's BaseQueueConf: nodes, tasks_per_node, timeout_min, ...) as
    they are, the others with the executor's prefix (``partition`` -> ``slurm_partition``)."""
    return {k if k in shared else f"{executor}_{k}": v for k, v in params.items()}


# -- validation with the job's layout -------------------------------------------------------------

_SHOWN = ("partition", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb",
          "timeout_min", "account", "qos", "constraint")


def validate_for_layout(config: Any, *, nodes: int, tasks_per_node: int, kind: str,
                        gpus_per_node: int = 0) -> None:
    """``config.validate()`` as a task of a job with ``nodes`` x ``tasks_per_node`` ranks and
    ``gpus_per_node`` GPUs will run it: against the launcher environment and the GPUs such a task
    will see, not this (submitting) process's (a login node often has no GPU, or other ones)."""

    config = copy.deepcopy(config)
    if gpus_per_node and tasks_per_node > gpus_per_node:
        # NCCL cannot run two ranks on one GPU ("Duplicate GPU detected").
        key = "dist.nproc_per_node" if config.dist.nproc_per_node is not None \
            else "hydra.launcher.tasks_per_node"
        raise ConfigError(key, tasks_per_node, f"must be <= {gpus_per_node}: the job asks for "
                          f"{gpus_per_node} GPU(s) per node (hydra.launcher.gpus_per_node), one "
                          "per rank; for CPU ranks set hydra.launcher.gpus_per_node=0")
    world = nodes * tasks_per_node
    launched = None  # what topo.launcher_env() will find in each task
    if world > 1 and kind == "slurm":
        launched = topo.LauncherEnv("slurm", world, tasks_per_node, nodes)
    elif world > 1:
        if nodes > 1:
            raise ConfigError("dist.nodes", nodes, "must be 1 with hydra/launcher=local "
                              "(one machine); use hydra/launcher=slurm for several nodes")
        launched = topo.LauncherEnv("submitit_local", world, world, 1)
    elif config.dist.nproc_per_node is None:
        config.dist.nproc_per_node = 1  # one task without GPUs requested: one process
    # A SLURM task sees the GPUs its job asked for; a local job runs on this machine's.
    gpus = gpus_per_node if kind == "slurm" else topo.host().gpus
    check_run(config, topo.Host(launched=launched, gpus=gpus))


# -- reporting helpers ----------------------------------------------------------------------------


def _remove_unstarted_sweep_dir(sweep_dir: Path) -> None:
    """Hydra's sweeper made the sweep dir (and multirun.yaml) before the launcher ran: a sweep that
    never started leaves nothing (submitit's .submitit/ of a refused submission included)."""
    if sweep_dir.is_dir() and all(p.name in ("multirun.yaml", ".submitit")
                                  for p in sweep_dir.iterdir()):
        remove_created_dir(sweep_dir)
