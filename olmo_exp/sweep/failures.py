"""How a failed sweep job is told in one line: the run's own error, never a peer rank's echo, and
the ``error.txt`` that the report reads from a job's run dir."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from olmo_exp.base.files import latest_attempt_config, write_atomic
from olmo_exp.runtime.launch import is_echo


def one_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."



def exception_line(exc: Any) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return one_line(str(exc))



_ERROR_LINE = re.compile(r"^error: ")



_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*)$")



def cause_from_log(job: Any) -> str:
    """The run's own one-line error (``error: ...``), else the last exception line of the log."""
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        text = ""
    lines = text.splitlines()
    for pattern in (_ERROR_LINE, _EXCEPTION_LINE):
        hits = [ln for ln in lines if pattern.match(ln)]
        if hits:
            return one_line(_ERROR_LINE.sub("", hits[-1]))
    return "exited without a result (killed, out of memory, or the node failed?)"



def root_cause(failed: list[tuple[int, str]]) -> tuple[int, str]:
    """The first failure that is not the echo of another rank's (launch.is_echo)."""

    if not failed:
        return 0, "the job failed"
    real = [(t, c) for t, c in failed if not is_echo(c)]
    return (real or failed)[0]



def count_requeues(job: Any) -> int:
    """submitit logs each requeue (INFO, the task's stdout log, appended to by every attempt; its
    own handler's format, as the root logger may repeat the line)."""
    try:
        text = Path(job.paths.stdout).read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(r"^submitit INFO \(.*\) - Requeued job ", text, flags=re.MULTILINE))


ERROR_FILE = "error.txt"



def write_error_file(run_dir: Path, text: str, *, keep: bool = False) -> None:
    """``error.txt`` in a failed job's run dir, whose first line is the report's error column;
    ``keep``: an account of this attempt already there (the job's own, with its traceback) wins."""
    if keep and _this_attempts(run_dir / ERROR_FILE, attempt_started(run_dir)):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / ERROR_FILE, text)



def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")



def attempt_started(run_dir: Path) -> float | None:
    """When the run dir's latest attempt began (its config is written as it starts, after its
    checks), None before any attempt started."""
    config = latest_attempt_config(run_dir)
    return config.stat().st_mtime if config is not None else None


def _this_attempts(path: Path, since: float | None) -> bool:
    return path.exists() and (since is None or path.stat().st_mtime >= since)


# train.log's lines start with logging's asctime (runtime/console.py FILE_FORMAT), local time.
_LOG_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) ")
_LOG_FAILURE = "Training failed due to"  # olmo-core's Trainer.fit, then the exception's line


def failure_line(run_dir: Path, since: float | None = None) -> str | None:
    """The first error line a failed run left after ``since`` (a time, as from
    :func:`attempt_started`; None: ever): our error file, else olmo-core's failure log line.
    An earlier attempt's failure is history, not the job's state."""
    error_file = run_dir / ERROR_FILE
    if _this_attempts(error_file, since):
        return first_line(error_file.read_text()) or "failed"
    log = run_dir / "train.log"
    if not log.exists():
        return None
    lines = log.read_text(errors="replace").splitlines()
    stamp: float | None = None
    for i, line in enumerate(lines):
        if match := _LOG_STAMP.match(line):
            stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
        if _LOG_FAILURE in line and (since is None or stamp is None or stamp >= since):
            cause = line.split(_LOG_FAILURE, 1)[1].strip(" :")
            return cause or first_line("\n".join(lines[i + 1:i + 2])) or "failed"
    return None
