"""How a failed sweep job is told in one line: the run's own error, never a peer rank's echo, and
the ``error.txt`` that the report reads from a job's run dir."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from olmo_exp.base.files import write_atomic
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
    ``keep``: an account already there (the job's own, with its traceback) wins."""
    if keep and (run_dir / ERROR_FILE).exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / ERROR_FILE, text)



def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")



def failure_line(run_dir: Path) -> str | None:
    """The first error line a failed run left: our error file, else olmo-core's failure log line."""
    error_file = run_dir / ERROR_FILE
    if error_file.exists():
        return first_line(error_file.read_text()) or "failed"
    log = run_dir / "train.log"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if "Training failed due to" in line:
                return line.split("Training failed due to", 1)[1].strip(" :")
    return None
