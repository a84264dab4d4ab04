"""The Hydra callback that keeps a multirun's report current (``conf/config.yaml`` enables it
as ``hydra.callbacks.sweep_report``), and the checks a sweep gets before any job starts."""

from __future__ import annotations

import atexit
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.runtime.console import rank_from_env
from olmo_exp.sweep.failures import exception_line, first_line, write_error_file
from olmo_exp.sweep.jobs import JobRow
from olmo_exp.sweep.report import expand_jobs, write_report


class SweepReportCallback(Callback):
    """Keeps ``report.*`` in the sweep dir current: after every job, at the end, and on the way out.

    Hydra's BasicSweeper raises on the first failed job (``on_multirun_end`` is then never called),
    and a rejected job exits the process: so the report is rewritten after each job and once more
    at exit. Under submitit ``on_job_end`` runs inside the job; the report reads only the sweep
    dir, so that works there too.
    """

    def __init__(self, baseline: Any = None, last_k: int = 3, confidence: float = 0.95,
                 matched: Any = None, cost: str | None = None, rungs: Any = None,
                 budget: Any = None) -> None:
        # The settings are read back from multirun.yaml by the report (olmo_exp.sweep.arm_report),
        # so that `python -m olmo_exp.sweep.report` gives the same report later.
        self._sweep_dir: Path | None = None
        self._open_job: tuple[Path, DictConfig] | None = None
        self._last_line = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_sweep(config)
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self._at_exit)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode is not None and str(config.hydra.mode) == "RunMode.MULTIRUN":
            self._open_job = (Path(str(config.hydra.runtime.output_dir)), config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        self._open_job = None
        run_dir = Path(str(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            if type(error).__name__ == "JobRejected":  # olmo_exp.sweep.basic: the run's own line
                write_error_file(run_dir, f"{error}\n")
            else:
                write_error_file(run_dir, f"{type(error).__name__}: {first_line(str(error))}\n\n"
                                 + "".join(traceback.format_exception(error)))
        self._write(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(str(config.hydra.sweep.dir)))

    def _at_exit(self) -> None:
        if self._open_job is not None:
            # The job left the process (sys.exit: a rejected run) without on_job_end.
            run_dir, config = self._open_job
            self._open_job = None
            write_error_file(run_dir, _rejection_line(config) + "\n")
        if self._sweep_dir is not None and self._sweep_dir.is_dir():
            self._write(self._sweep_dir)

    def _write(self, sweep_dir: Path) -> None:
        if rank_from_env() != 0:
            return
        try:
            rows = write_report(sweep_dir)
        except Exception as e:  # Hydra would turn it into a warning: say it, and how to recover
            line = (f"error: the report of sweep {sweep_dir} was not written ({exception_line(e)}); "
                    f"write it with: python -m olmo_exp.sweep.report {sweep_dir}")
            if line != self._last_line:
                print(line, file=sys.stderr)
                self._last_line = line
            return
        line = f"report: {sweep_dir / 'report.md'} ({progress(rows)})"
        if line != self._last_line:  # the end of a sweep rewrites it twice more, unchanged
            print(line, file=sys.stderr)
            self._last_line = line


def _rejection_line(config: DictConfig) -> str:
    """The one-line error the job printed when it was rejected: validation is deterministic, so
    it is asked again; other rejections (run dir, data) only printed theirs to stderr."""
    from olmo_exp.config.compose import run_config
    from olmo_exp.data.check import check_run

    try:
        check_run(run_config(config))
    except ConfigError as e:
        return f"error: {e}"
    return "exited before finishing (a rejected run prints its one-line error to stderr)"


def _check_sweep(config: DictConfig) -> None:
    """Before any job starts: the baseline selects exactly one arm, and a sweep declared
    budget-matched (``hydra.callbacks.sweep_report.matched``) has every arm, composed with all of
    its overrides (``model.*``, ``model/lws``, ``data.sequence_length``, ...), within tolerance of
    the baseline arm; it prints the match and refuses a drifted arm with the numbers."""
    from olmo_exp.sweep import match, rungs
    from olmo_exp.sweep.arm_report import ReportSettings
    from olmo_exp.sweep.arms import baseline_arm, group_arms

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=False) if node is not None else None

    params = plain(OmegaConf.select(config, "hydra.sweeper.params"))
    jobs = expand_jobs(params, list(config.hydra.overrides.task))
    arms = group_arms({"overrides": j, "status": "not started", "metrics": {}} for j in jobs)
    try:
        settings = ReportSettings.from_callback(
            plain(OmegaConf.select(config, "hydra.callbacks.sweep_report")))
        settings.check()
        rungs.check(settings.rungs, settings.budget, jobs)
        # A ladder: each rung's arms against the baseline arm of that rung.
        for part in rungs.partitions(arms, settings.rungs, settings.budget):
            try:
                base = baseline_arm(part, settings.baseline)
            except ValueError as e:
                raise ConfigError("hydra.callbacks.sweep_report.baseline", settings.baseline,
                                  str(e)) from None
            if settings.matched:
                match.check_arms({a.label: list(a.overrides) for a in part}, base.label,
                                 settings.matched)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def progress(rows: list[JobRow]) -> str:
    """``3/4 jobs done, 1 failed``: failed and diverged jobs are done, and counted apart so that
    none hides."""
    done = sum(r.status in ("finished", "failed", "diverged", "dry run") for r in rows)
    apart = [f"{n} {status}" for status in ("failed", "diverged")
             if (n := sum(r.status == status for r in rows))]
    return ", ".join([f"{done}/{len(rows)} jobs done", *apart])
