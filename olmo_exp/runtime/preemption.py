"""Stopping a run on a signal without losing work: a time limit or preemption in a sweep job
(USR2, ``signal_delay_s`` before the limit: checkpoint and requeue), Ctrl-C or ``kill`` anywhere
(SIGINT/SIGTERM: checkpoint and exit 130/143; the same command resumes).

A signal only sets a flag; the training loop stops on all ranks after the same step
(:class:`olmo_exp.runtime.callbacks.StopOnSignalCallback`), which also calls off what would run
after training (evaluation, downstream tasks, sampling): evaluations stay on their schedule however
often a run is stopped, and the requeue comes well before the kill. olmo-core's checkpointer saves
that step; then :func:`requeue_if_signaled` hands over to submitit's own handler (requeue), or
:func:`exit_if_stopped` ends the process with the signal's exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from olmo_exp.runtime.console import rank_from_env

log = logging.getLogger(__name__)

# Ctrl-C and kill: stop after the step, save it, exit with the shell's code for the signal.
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A second SIGINT this soon is the same Ctrl-C passed on (torch's launcher forwards it to the
# ranks, which the terminal signalled already), not the user's second one.
REPEAT_S = 2.0


@dataclass
class _PreemptionState:
    signal_name: str | None = None
    """Set by the signal handler: the time-limit/preemption signal arrived."""
    stop_signal: str | None = None
    """Set by the SIGINT/SIGTERM handler: stop, checkpoint, exit (no requeue)."""
    stop_time: float = 0.0
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
    """The signal that asked training to stop (the time limit's, or SIGINT/SIGTERM), if any."""
    return _preemption.signal_name or _preemption.stop_signal


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


def _on_stop_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    now = time.monotonic()
    if _preemption.stop_signal is None:
        _preemption.stop_signal, _preemption.stop_time = name, now
        os.write(2, f"caught {name}: stopping after this step to save a checkpoint "
                    "(Ctrl-C again quits without it)\n".encode())
    elif signum == signal.SIGINT and now - _preemption.stop_time > REPEAT_S:
        raise KeyboardInterrupt  # Ctrl-C twice: quit now, without this step's checkpoint


def set_phase(phase: str) -> None:
    """``training`` once the trainer runs (a signal then stops it after a step), ``done`` after."""
    _preemption.phase = phase


def install_stop_handlers() -> None:
    """SIGINT/SIGTERM stop training after the current step. Installed when training starts (from
    the trainer's ``pre_train``), over olmo-core's own handlers, which would cancel the run only
    at the trainer's next cancel check (up to ``cancel_check_interval`` steps later) and then
    evaluate; ``Trainer.fit`` puts the handlers from before training back when it returns."""
    _preemption.stop_signal = None
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)


def install_handler() -> None:
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


def exit_if_stopped(step: int, total_steps: int, *, rank0: bool) -> None:
    """After training stopped on SIGINT/SIGTERM and the checkpoint of ``step`` is saved: say so
    and exit with the signal's code (130 / 143, as shells report a process the signal ended)."""
    name = _preemption.stop_signal
    if name is None:
        return
    _preemption.stop_signal = None
    if rank0:
        log.warning("stopped at step %d/%d (%s): resume with the same command", step, total_steps,
                    name)
    raise SystemExit(STOP_SIGNALS[signal.Signals[name]])
