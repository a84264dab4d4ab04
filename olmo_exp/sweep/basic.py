"""The default ``-m`` launcher (``hydra/launcher=sequential``, selected in ``conf/config.yaml``): Hydra's
BasicLauncher (jobs one after another in this process) with the SLURM launcher's guarantees:

- every point is composed and validated before any job starts: each invalid point is one line
  (``error: sweep point #N (overrides): ...``), exit 2, nothing started, no sweep dir left;
- a job that fails at run time (an exception, or a run rejected at start, e.g. by its data) is
  recorded (the report's row, one ``error: job #N ...`` line) and the remaining jobs still run;
  run.py exits 1 at the end (:func:`olmo_exp.sweep.launcher.sweep_exit_code`).

Hydra's own BasicLauncher trains point #0 and then stops on #1's error, and its BasicSweeper raises
on the first failed job's return value, skipping ``on_multirun_end``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from omegaconf import open_dict

from olmo_exp.base.errors import ConfigError, Rejected
from olmo_exp.config.compose import run_config
from olmo_exp.data.check import check_run
from olmo_exp.sweep.failures import exception_line
from olmo_exp.sweep.launcher import (
    FailedJobReturn,
    _remove_unstarted_sweep_dir,
    _shown_overrides,
    record_failure,
)

log = logging.getLogger(__name__)


class JobRejected(Exception):
    """A job's run refused to start (its one-line error printed); the message is that line."""


def _task(task_function: Any) -> Any:
    """The task function with a rejected run (SystemExit) turned into an exception, which Hydra's
    run_job records as a failed job (and hands to the callbacks) instead of leaving the process."""

    def task(cfg: Any) -> Any:
        try:
            return task_function(cfg)
        except Rejected as e:
            raise JobRejected(e.line) from None
        except SystemExit as e:
            if e.code in (0, None):
                return None
            raise JobRejected(f"the run exited with code {e.code}") from None

    return task


class CheckedBasicLauncher(BasicLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        errors = []
        for i, overrides in enumerate(job_overrides):
            sweep_cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                           list(overrides))
            try:
                check_run(run_config(sweep_cfg))
            except ConfigError as e:
                shown = _shown_overrides(list(overrides), job_overrides)
                errors.append(f"error: sweep point #{initial_job_idx + i} ({shown}): {e}")
        if errors:
            print("\n".join(errors), file=sys.stderr)
            _remove_unstarted_sweep_dir(sweep_dir)
            sys.exit(2)
        return self._run_all(job_overrides, initial_job_idx)

    def _run_all(self, job_overrides: Sequence[Sequence[str]],
                 initial_job_idx: int) -> list[JobReturn]:
        """BasicLauncher.launch's loop, with each failure recorded as it happens."""
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs locally", len(job_overrides))
        task = _task(self.task_function)
        returns: list[JobReturn] = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                              list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            ret = run_job(hydra_context=self.hydra_context, task_function=task,
                          config=sweep_config, job_dir_key="hydra.sweep.dir",
                          job_subdir_key="hydra.sweep.subdir")
            if ret.status == JobStatus.FAILED:
                ret = self._failed(num, ret, job_overrides)
            returns.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    @staticmethod
    def _failed(num: int, ret: JobReturn, all_points: Sequence[Sequence[str]]) -> JobReturn:
        error = ret._return_value
        cause = str(error) if isinstance(error, JobRejected) else exception_line(error)
        cause = cause.removeprefix("error: ")
        shown = " ".join(filter_overrides(ret.overrides or [])) if len(all_points) < 2 else \
            _shown_overrides(list(ret.overrides or []), all_points)
        record_failure(f"error: job #{num} ({shown}) failed: {cause}")
        failed = FailedJobReturn()
        failed.__dict__.update(ret.__dict__)
        return failed
