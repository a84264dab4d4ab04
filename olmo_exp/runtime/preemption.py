"""Time limits and preemption inside a sweep job (``-m hydra/launcher=slurm|local``).

The signal (USR2, ``signal_delay_s`` before the limit) only sets a flag; the training loop stops on
all ranks after the same step (:class:`olmo_exp.runtime.callbacks.RequeueCallback`), olmo-core's
checkpointer saves that step, and then submitit's own handler requeues the job
(:func:`requeue_if_signaled`). The requeued job resumes from the latest checkpoint of its run dir.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from olmo_exp.runtime.console import rank_from_env

log = logging.getLogger(__name__)


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
