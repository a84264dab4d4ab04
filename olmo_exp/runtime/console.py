"""What a person sees: one line per logged step, one log format, and no known-harmless library noise.

- :data:`NOISE` is the one list of third-party messages that are dropped at their source (a filter
  on the emitting logger, or a ``warnings`` filter). Each entry says why it is harmless. Nothing
  else is filtered: the project's own messages and unknown library warnings always get through.
  ``olmo_exp/__init__.py`` installs it, so every process (run.py, spawned ranks, submitit jobs,
  ``python -m olmo_exp.data``) has it before olmo-core is imported.
- :func:`configure_logging` owns the log format of every job (the parent process and each rank,
  every job of a multirun): the console shows rank 0's messages (and errors of any rank, marked
  with the rank); ``train.log`` in the run directory gets rank 0's full detail.
- :class:`StepConsole` turns olmo-core's metrics into ``step 45/100 · loss 6.81 · val 6.80 ·
  3,280 tok/s · eta 0:31`` lines, or a progress bar where stdout is a terminal (not under SLURM):
  one line per :func:`logged_step` (every ``train.log_interval`` steps, evaluations, the last
  step), stamped with the time its step ended, not the time olmo-core handed its metrics over
  (olmo-core collects every step's metrics and passes them on in bursts).
  ``train.console=full`` brings back olmo-core's own metrics block and module listing instead.

Light on purpose (stdlib only at import): it is imported by every command, ``--help`` included.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- known-harmless library noise ------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    source: str
    """The emitting logger's name, or ``warnings:<module>`` for a Python warning raised there."""
    message: str
    """Regular expression matched at the start of the message."""
    why: str


NOISE: tuple[Noise, ...] = (
    Noise("olmo_core.nn.attention.te_attn_api", r"transformer_engine unavailable",
          "NVIDIA Transformer Engine is optional; olmo-core uses torch attention without it. "
          "Logged at import time, i.e. by every command."),
    Noise("olmo_core.utils", r"Will skip setting env var 'OMP_NUM_THREADS'",
          "olmo_exp.runtime.launch sets OMP_NUM_THREADS per rank on purpose; the message shows "
          "olmo-core's default ('8'), not the value in use."),
    Noise("olmo_core.train.trainer", r"No checkpoint found in save folder",
          "a new run directory; the console's start line says 'from scratch' or 'resuming'."),
    Noise("warnings:torch.distributed.tensor",
          r"DTensor random operators may not have complete support on cpu device mesh",
          "FSDP on CPU (gloo), once per rank at weight init; 2-rank FSDP runs give the same "
          "per-step losses as one process (tests/test_dist.py)."),
    Noise("warnings:torch.distributed.checkpoint",
          r"torch\.distributed is disabled, unavailable or uninitialized, assuming the intent "
          r"is to (save|load) in a single process",
          "a single-process run saving (at every save) or resuming from a checkpoint."),
)


class _DropNoise(logging.Filter):
    def __init__(self, patterns: list[re.Pattern[str]]):
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


_installed = False


def install_noise_filters() -> None:
    """Drop the :data:`NOISE` messages where they are emitted (idempotent)."""
    global _installed
    for noise in NOISE:  # re-adding an identical warnings filter only moves it to the front
        if noise.source.startswith("warnings:"):
            module = re.escape(noise.source.removeprefix("warnings:"))
            warnings.filterwarnings("ignore", message=noise.message, module=module)
    if _installed:
        return
    _installed = True
    by_logger: dict[str, list[re.Pattern[str]]] = {}
    for noise in NOISE:
        if not noise.source.startswith("warnings:"):
            by_logger.setdefault(noise.source, []).append(re.compile(noise.message))
    for name, patterns in by_logger.items():
        # A logger's own filters see exactly the records logged on it: nothing else is touched.
        logging.getLogger(name).addFilter(_DropNoise(patterns))


# -- log format and routing ------------------------------------------------------------------

# Loggers whose INFO messages the compact console shows; other libraries' from WARNING up.
CONSOLE_INFO_LOGGERS = ("olmo_exp", "__main__", "hydra")
LOG_FILE = "train.log"
RANK_OUTPUT_ENV = "OLMO_EXP_RANK_OUTPUT"
"""Set to ``files`` by :func:`olmo_exp.runtime.launch.spawn`: ranks other than 0 write to their own files
(the run's ``logs/``), so they log everything there rather than errors only."""
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


STEP_TIME_ATTR = "step_ended"
"""A log record's ``extra``: when the step it reports ended (``time.time()``); formatters stamp
the record with it instead of the moment it was logged."""


class _StepTimeFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        ended = getattr(record, STEP_TIME_ATTR, None)
        if ended is None:
            return super().formatTime(record, datefmt)
        stamped = logging.makeLogRecord({"created": ended, "msecs": (ended % 1) * 1000})
        return super().formatTime(stamped, datefmt)


class _ConsoleFormatter(_StepTimeFormatter):
    """``12:04:05 message`` for INFO; level and logger name for anything more severe."""

    def __init__(self, rank: int):
        super().__init__(datefmt="%H:%M:%S")
        self.prefix = f"[rank {rank}] " if rank else ""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno > logging.INFO:
            text = f"{record.levelname} {record.name}: {text}"
        return f"{self.prefix}{self.formatTime(record, self.datefmt)} {text}"


class _CompactConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "step_line", False) and _bar is not None:
            return False  # the progress bar shows it
        return record.levelno >= logging.WARNING or record.name.startswith(CONSOLE_INFO_LOGGERS)


class _NoModuleListing(logging.Filter):
    """olmo-core logs the whole ``Transformer(...)`` module tree each time a model is built; the
    per-layer table (``model_summary.json``) is this project's model description."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "olmo_core.nn.transformer.config" and record.msg == "%s")


class _ConsoleHandler(logging.StreamHandler):
    """Writes above an active progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        if _bar is None:
            super().emit(record)
            return
        try:
            _bar.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise into training
            self.handleError(record)


def hydra_log_formatter() -> logging.Formatter:
    """Hydra's own log lines (``conf/hydra/hydra_logging/olmo.yaml``) in the run's format."""
    return _ConsoleFormatter(0)


def rank_from_env() -> int:
    """This process's global rank before the process group exists (torchrun, submitit tasks)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local"):
        from submitit import JobEnvironment

        return JobEnvironment().global_rank
    return 0


def configure_logging(*, log_file: Path | None = None, rank: int = 0, full: bool = False) -> None:
    """Replace the root handlers with this project's: the same format in every process and job.

    Rank 0: console (INFO of this project, WARNING+ of libraries; everything with ``full``) and
    ``log_file`` (everything at INFO, opened on the first message, appended to). Other ranks,
    prefixed ``[rank N]``: errors only on a console they share with rank 0 (torchrun, SLURM);
    everything at INFO when run.py started them, whose output goes to the run's ``logs/``.
    """
    install_noise_filters()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    root.setLevel(logging.INFO)
    console = _ConsoleHandler(sys.stdout)
    console.setFormatter(_ConsoleFormatter(rank))
    if rank != 0:
        if os.environ.get(RANK_OUTPUT_ENV) == "files":  # its own file in logs/: the file format
            console.setFormatter(_StepTimeFormatter(f"[rank {rank}] {FILE_FORMAT}"))
        else:  # a console shared with rank 0
            console.setLevel(logging.ERROR)
    elif not full:
        console.addFilter(_CompactConsole())
    if not full:
        console.addFilter(_NoModuleListing())
    root.addHandler(console)
    if log_file is not None and rank == 0:
        file = logging.FileHandler(log_file, delay=True)  # a rejected run creates no file
        file.setFormatter(_StepTimeFormatter(FILE_FORMAT))
        if not full:
            file.addFilter(_NoModuleListing())
        root.addHandler(file)
    logging.captureWarnings(True)


# -- one line per logged step ----------------------------------------------------------------

log = logging.getLogger(__name__)

TRAIN_LOSS = "train/CE loss"
VAL_LOSS = "eval/lm/validation/CE loss"
VAL_PPL = "eval/lm/validation/PPL"
# Each step's own training time and tokens (runtime.callbacks.TrainStepTimer), which the sweep
# report sums; olmo-core's running average, for runs recorded before them.
STEP_TIME = "throughput/device/train step time (s)"
STEP_TOKENS = "throughput/device/train step tokens"
DEVICE_TPS_AVG = "throughput/device/TPS (actual avg)"
DEVICE_TPS = "throughput/device/TPS"
DEVICE_MFU = "throughput/device/MFU"

_bar: Any = None
"""The active tqdm bar of this process, if any (console handlers write above it)."""


def want_progress_bar() -> bool:
    """A live bar only on a terminal; plain lines in files, pipes and SLURM jobs."""
    return sys.stdout.isatty() and "SLURM_JOB_ID" not in os.environ


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def step_fields(metrics: dict[str, float], *, val_loss: float | None, world_size: int,
                eta_s: float | None) -> list[str]:
    """The parts after ``step N/M``: loss, this step's validation loss, tokens/s (all ranks), MFU, eta."""
    parts = []
    if TRAIN_LOSS in metrics:
        parts.append(f"loss {metrics[TRAIN_LOSS]:.2f}")
    if val_loss is not None:
        parts.append(f"val {val_loss:.2f}")
    if DEVICE_TPS in metrics:
        parts.append(f"{metrics[DEVICE_TPS] * world_size:,.0f} tok/s")
    if DEVICE_MFU in metrics:  # olmo-core reports MFU only on GPUs it knows the peak of
        parts.append(f"{metrics[DEVICE_MFU]:.0f}% MFU")
    if eta_s is not None:
        parts.append(f"eta {format_duration(eta_s)}")
    return parts


def logged_step(step: int, metrics: dict[str, float], interval: int) -> bool:
    """Whether a step gets a console line and a ``metrics.jsonl`` record: every ``interval``-th
    step (``train.log_interval``) and every step with evaluation metrics. (The last step trained
    gets one too; only the trainer knows which that is: see the callbacks' ``post_train``.)"""
    return step > 0 and (step % max(interval, 1) == 0 or any(k.startswith("eval/") for k in metrics))


STEP_LINE = re.compile(r"^step (\d+)/(\d+)( · [^·]+)+$")
"""What every per-step line looks like (tests and log readers rely on it)."""


@dataclass
class StepConsole:
    """Rank 0's view of a training run: start line, one line per logged step, end line.

    Fed by :class:`olmo_exp.runtime.callbacks.ConsoleCallback` (olmo-core's hooks); everything olmo-core
    collects still goes to ``metrics.jsonl`` (and wandb) unchanged.
    """

    total_steps: int
    world_size: int = 1
    progress_bar: bool = False
    log_interval: int = 1
    _val_loss: float | None = None
    _first: tuple[int, float] | None = None
    _last_step: int = 0
    _last_train: dict[str, float] | None = None
    _unshown: tuple[int, dict[str, float], float | None] | None = None
    _started_at: float = 0.0

    def start(self, step: int, *, checkpoint: str | None, start_from: str | None = None) -> None:
        global _bar
        self._started_at = time.monotonic()
        self._last_step = step
        if checkpoint:
            log.info("resuming at step %d of %d from %s", step, self.total_steps, checkpoint)
        else:
            log.info("training %d steps from %s", self.total_steps, start_from or "scratch")
        if self.progress_bar:
            from tqdm import tqdm

            _bar = tqdm(total=self.total_steps, initial=step, file=sys.stdout,
                        bar_format="step {n}/{total} |{bar:24}| {desc}")

    def _eta(self, step: int, ended: float | None) -> float | None:
        """From the steps' own end times: the same whether lines come one by one or in a burst."""
        if ended is None:
            return None
        if self._first is None:
            self._first = (step, ended)
            return None
        first_step, first_time = self._first
        if step <= first_step:
            return None
        return (self.total_steps - step) * (ended - first_time) / (step - first_step)

    def log_metrics(self, step: int, metrics: dict[str, float], ended: float | None = None) -> None:
        """One step's metrics; ``ended``: when that step ended (``time.time()``), which may be
        well before olmo-core hands its metrics over."""
        if VAL_LOSS in metrics:
            self._val_loss = metrics[VAL_LOSS]
        if TRAIN_LOSS in metrics:
            if self._first is None and ended is not None:
                self._first = (step, ended)  # the eta's origin: the first step seen, shown or not
            self._last_train = metrics
            self._last_step = step
            if not logged_step(step, metrics, self.log_interval):
                self._unshown = (step, metrics, ended)  # shown only if it is the last one
                return
            self._unshown = None
            # val only where it was computed: an older one beside this step's loss would read as
            # current (it is in the end line, and on its own step's line).
            fields = step_fields(metrics, val_loss=metrics.get(VAL_LOSS),
                                 world_size=self.world_size, eta_s=self._eta(step, ended))
        elif VAL_LOSS in metrics:  # validation at a step whose line is already out
            fields = [f"val {self._val_loss:.2f}"]
        else:
            return
        self._emit(step, fields, ended)

    def show_last_step(self) -> None:
        """Training ended (its budget, a stop, a signal) on a step between log intervals: its line."""
        if self._unshown is not None:
            step, metrics, ended = self._unshown
            self._unshown = None
            self._emit(step, step_fields(metrics, val_loss=None, world_size=self.world_size,
                                         eta_s=self._eta(step, ended)), ended)

    def _emit(self, step: int, fields: list[str], ended: float | None = None) -> None:
        line = " · ".join([f"step {step}/{self.total_steps}", *fields])
        if _bar is not None:
            _bar.update(step - _bar.n)
            _bar.set_description_str(" · ".join(fields), refresh=True)
        log.info(line, extra={"step_line": True, STEP_TIME_ATTR: ended})

    def close_bar(self) -> None:
        global _bar
        if _bar is not None:
            _bar.close()
            _bar = None

    def finish(self) -> None:
        self.close_bar()
        took = format_duration(time.monotonic() - self._started_at)
        parts = [f"finished at step {self._last_step}/{self.total_steps} in {took}"]
        if self._last_train and TRAIN_LOSS in self._last_train:
            parts.append(f"loss {self._last_train[TRAIN_LOSS]:.2f}")
        if self._val_loss is not None:
            parts.append(f"val {self._val_loss:.2f}")
        log.info(" · ".join(parts))
