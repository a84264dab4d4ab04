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
same step (:class:`olmo_exp.callbacks.RequeueCallback`), olmo-core's checkpointer saves that step, and
then submitit's own handler requeues the job (:func:`requeue_if_signaled`). The requeued job
resumes from the latest checkpoint in its run directory.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from olmo_exp.console import rank_from_env
from olmo_exp.files import remove_created_dir
from olmo_exp.validation import ConfigError

log = logging.getLogger(__name__)

# Launcher choices that only make sense with -m (they submit jobs).
SWEEP_LAUNCHERS = ("slurm", "local", "submitit_slurm", "submitit_local")


# -- resources ----------------------------------------------------------------------------------


def tasks_per_node(nproc_per_node: int | None, gpus_per_node: int | None) -> int:
    """One task = one rank: ``dist.nproc_per_node``; null = one per GPU, or 1 without GPUs."""
    if nproc_per_node is not None:
        return int(nproc_per_node)
    return max(int(gpus_per_node or 0), 1)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("olmo_tasks_per_node", tasks_per_node, replace=True)


register_resolvers()  # also in job processes, which unpickle this module's launcher

# The launchers' names in conf/hydra/launcher/*.yaml (``_target_``). Hydra 1.3 instantiates a
# launcher only under a ``hydra_plugins.`` name found in its plugin registry.
PLUGIN_NAMES = {"slurm": "hydra_plugins.olmo_exp_launcher.SlurmLauncher",
                "local": "hydra_plugins.olmo_exp_launcher.LocalLauncher"}


def register_launchers() -> None:
    """Put the launchers in Hydra's plugin registry under their ``hydra_plugins.`` names.

    The classes stay in this module (jobs unpickle them from here); no ``hydra_plugins`` package
    has to be installed. Called by :func:`olmo_exp.schema.register` before Hydra starts.
    """
    from hydra.core.plugins import Plugins

    registry = Plugins.instance().class_name_to_class
    registry[PLUGIN_NAMES["slurm"]] = SlurmLauncher
    registry[PLUGIN_NAMES["local"]] = LocalLauncher


# -- run mode: the launcher needs -m ------------------------------------------------------------


def check_launcher_mode() -> None:
    """``python run.py hydra/launcher=slurm`` without -m would silently train here: refuse it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choice = hydra_cfg.runtime.choices.get("hydra/launcher")
    if hydra_cfg.mode == RunMode.RUN and choice in SWEEP_LAUNCHERS:
        raise ConfigError("hydra/launcher", choice,
                          "submits jobs only for sweeps: add -m (python run.py -m "
                          f"hydra/launcher={choice} ...); a single point is a sweep of one job")


# -- in the job: rank, signal, requeue ------------------------------------------------------------


@dataclass
class _PreemptionState:
    signal_name: str | None = None
    """Set by the signal handler: the time-limit/preemption signal arrived."""
    submitit_handler: Callable[..., Any] | None = None
    """submitit's own handler (checkpoint the submission + requeue), called once a checkpoint is saved."""
    signum: int = 0
    phase: str = "setup"
    """setup (no trainer yet: requeue at once) | training (stop after a step) | done (ignore)."""


_preemption = _PreemptionState()


def in_sweep_job() -> bool:
    """True inside a task started by these launchers (the signal handler is installed)."""
    return _preemption.submitit_handler is not None


def signal_received() -> str | None:
    return _preemption.signal_name


def _on_preemption_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _preemption.phase == "setup" and callable(_preemption.submitit_handler):
        # Nothing trained yet, nothing to save: submitit's own handler requeues now (rank 0).
        os.write(2, f"caught {name} (time limit or preemption) before training: requeuing\n".encode())
        _preemption.submitit_handler(signum, frame)
        return
    # Only a flag (and a raw write: logging may hold its lock in the interrupted frame).
    _preemption.signal_name = name
    if _preemption.phase == "training":
        os.write(2, f"caught {name} (time limit or preemption): stopping after this step to "
                    f"save a checkpoint\n".encode())


def set_phase(phase: str) -> None:
    """``training`` once the trainer runs (a signal then stops it after a step), ``done`` after."""
    _preemption.phase = phase


def _install_preemption_handler() -> None:
    from submitit import JobEnvironment

    signum = JobEnvironment._usr_sig()
    _preemption.submitit_handler = signal.getsignal(signum)  # type: ignore[assignment]
    _preemption.signum = signum
    _preemption.signal_name = None
    _preemption.phase = "setup"
    signal.signal(signum, _on_preemption_signal)


def requeue_if_signaled(step: int) -> None:
    """After training stopped on the signal and the checkpoint of ``step`` is saved: requeue.

    Rank 0 hands over to submitit's handler (dumps the launcher's ``checkpoint()`` submission, calls
    ``scontrol requeue`` or the local executor's requeue, exits); the other ranks exit too, without a
    result, so that the sweep keeps waiting for the requeued job.
    """
    if _preemption.signal_name is None or _preemption.submitit_handler is None:
        return
    log.warning("saved a checkpoint at step %d; requeuing", step)
    if rank_from_env() == 0 and callable(_preemption.submitit_handler):
        _preemption.submitit_handler(_preemption.signum, None)  # exits (SystemExit) when requeued
    raise SystemExit(-1)


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


def sweep_exit_code() -> int:
    """1 when a job of this process's sweep failed (each already reported), else 0."""
    return 1 if _failed_jobs else 0


class _SweepLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's launcher with validation first, per-point resources, one-line
    failures and requeue-safe waiting (see the module docstring)."""

    poll_s: float = 1.0
    state_refresh_s: float = 10.0

    # -- submitting process ------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            self._check_available()
            points = [self._prepare(initial_job_idx + i, list(o), job_overrides)
                      for i, o in enumerate(job_overrides)]
        except (LaunchRejected, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            _remove_unstarted_sweep_dir(sweep_dir)
            sys.exit(2)
        submitted = self._submit(points, sweep_dir)
        self._wait(submitted)
        return [self._job_return(s) for s in submitted]

    def _check_available(self) -> None:
        """Overridden by the SLURM launcher."""

    def _prepare(self, num: int, overrides: list[str],
                 all_points: Sequence[Sequence[str]]) -> _Point:
        """Compose the point as its job will, resolve its launcher settings, validate its config."""
        from olmo_exp.schema import run_config

        assert self.hydra_context is not None and self.config is not None
        sweep_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_cfg.hydra.job):
            sweep_cfg.hydra.job.num = num
        params = OmegaConf.to_container(sweep_cfg.hydra.launcher, resolve=True)
        assert isinstance(params, dict)
        params.pop("_target_", None)
        config = run_config(sweep_cfg)  # what the task function will receive
        shown = _shown_overrides(overrides, all_points)
        try:
            validate_for_layout(config, nodes=int(params["nodes"]),
                                tasks_per_node=int(params["tasks_per_node"]), kind=self._EXECUTOR)
        except ConfigError as e:
            raise LaunchRejected(f"sweep point #{num} ({shown}): {e}") from None
        run_dir = Path(str(sweep_cfg.hydra.sweep.dir)) / str(sweep_cfg.hydra.sweep.subdir)
        return _Point(num, overrides, params, shown, run_dir)

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
            executor.update_parameters(**{
                k if k in base_keys else f"{self._EXECUTOR}_{k}": v for k, v in params.items()
            })
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
                print(f"error: submission failed: {_one_line(str(e))}", file=sys.stderr)
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
        s.requeues = _count_requeues(job)
        shown = s.point.shown
        task_results: list[tuple[int, JobReturn | None, str]] = []
        for task in range(job.num_tasks):
            sub = job.task(task)
            try:
                ret = sub.result()
                cause = "" if ret.status == JobStatus.COMPLETED else _exception_line(ret._return_value)
                task_results.append((task, ret, cause))
            except Exception:  # no result: the task exited (sys.exit, signal, kill, node failure)
                task_results.append((task, None, _cause_from_log(sub)))
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
        task, cause = _root_cause(failed)
        s.log_path = str(job.task(task).paths.stderr)
        # A job whose task raised still "completes" as far as the scheduler is concerned.
        state = s.state if s.state not in ("COMPLETED", "FINISHED", "UNKNOWN", "") else "FAILED"
        s.cause = cause
        line = (f"error: job #{s.point.num} [{job.job_id}] ({shown}) failed ({state}{again}): "
                f"{cause} | log: {s.log_path}")
        _failed_jobs.append(line)
        print(line, file=sys.stderr, flush=True)
        # The report reads each job from its run dir alone: a job that failed before its run wrote
        # anything (a rejected run removes its own dir) still gets its first error line.
        if s.point.run_dir is not None:
            from olmo_exp.report import write_error_file

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
        import submitit

        from olmo_exp.schema import register

        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        register()  # this process never ran run.py's module code: its resolvers
        _install_preemption_handler()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                          sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        if rank_from_env() != 0:
            # Rank 0 writes the shared files; Hydra's job log file is one of them.
            handlers = OmegaConf.select(sweep_config, "hydra.job_logging.root.handlers")
            if handlers is not None and "file" in handlers:
                with open_dict(sweep_config):
                    sweep_config.hydra.job_logging.root.handlers = [
                        h for h in handlers if h != "file"
                    ]
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                       config=sweep_config, job_dir_key=job_dir_key,
                       job_subdir_key="hydra.sweep.subdir")


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


# -- validation with the job's layout -------------------------------------------------------------

def validate_for_layout(config: Any, *, nodes: int, tasks_per_node: int, kind: str) -> None:
    """``config.validate()`` as a task of a job with ``nodes`` x ``tasks_per_node`` ranks will run it:
    against the launcher environment such a task will see, not this (submitting) process's."""
    from olmo_exp import launch

    config = copy.deepcopy(config)
    world = nodes * tasks_per_node
    launched = None  # what launch.launcher_env() will find in each task
    if world > 1 and kind == "slurm":
        launched = launch.LauncherEnv("slurm", world, tasks_per_node, nodes)
    elif world > 1:
        if nodes > 1:
            raise ConfigError("dist.nodes", nodes, "must be 1 with hydra/launcher=local "
                              "(one machine); use hydra/launcher=slurm for several nodes")
        launched = launch.LauncherEnv("submitit_local", world, world, 1)
    elif config.dist.nproc_per_node is None:
        config.dist.nproc_per_node = 1  # one task without GPUs requested: one process
    config.validate(host=launch.Host(launched=launched, gpus=launch.host().gpus))


# -- reporting helpers ----------------------------------------------------------------------------


def _one_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _exception_line(exc: Any) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return _one_line(str(exc))


_ERROR_LINE = re.compile(r"^error: ")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*)$")


def _cause_from_log(job: Any) -> str:
    """The run's own one-line error (``error: ...``), else the last exception line of the log."""
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        text = ""
    lines = text.splitlines()
    for pattern in (_ERROR_LINE, _EXCEPTION_LINE):
        hits = [ln for ln in lines if pattern.match(ln)]
        if hits:
            return _one_line(_ERROR_LINE.sub("", hits[-1]))
    return "exited without a result (killed, out of memory, or the node failed?)"


def _root_cause(failed: list[tuple[int, str]]) -> tuple[int, str]:
    """The first failure that is not the echo of another rank's (launch.is_echo)."""
    from olmo_exp.launch import is_echo

    if not failed:
        return 0, "the job failed"
    real = [(t, c) for t, c in failed if not is_echo(c)]
    return (real or failed)[0]


def _count_requeues(job: Any) -> int:
    """submitit logs each requeue (INFO, the task's stdout log, appended to by every attempt; its
    own handler's format, as the root logger may repeat the line)."""
    try:
        text = Path(job.paths.stdout).read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(r"^submitit INFO \(.*\) - Requeued job ", text, flags=re.MULTILINE))


def _remove_unstarted_sweep_dir(sweep_dir: Path) -> None:
    """Hydra's sweeper made the sweep dir (and multirun.yaml) before the launcher ran: a sweep that
    never started leaves nothing (submitit's .submitit/ of a refused submission included)."""
    if sweep_dir.is_dir() and all(p.name in ("multirun.yaml", ".submitit")
                                  for p in sweep_dir.iterdir()):
        remove_created_dir(sweep_dir)
