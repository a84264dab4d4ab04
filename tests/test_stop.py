"""Stopping is honest: Ctrl-C (SIGINT) or ``kill`` (SIGTERM) stops a run within the step it is in,
saves that step's checkpoint, says where it stopped and how to go on, and exits 130 / 143 (as
shells report a process the signal ended); the same command then resumes and finishes with one
metrics record per step, and evaluations only on their schedule."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, read_jsonl

from olmo_exp.base.files import read_jsonl as read_partial_jsonl

STEPS = 40
EVAL_EVERY = 7  # 40 % 7 != 0: the schedule evaluates at 7, 14, ..., 35 and at the end, 40
LONG = [*(o for o in TINY if not o.startswith(("train.max_steps", "train.checkpoint_interval",
                                                 "train.eval_interval"))),
        f"train.max_steps={STEPS}", "train.checkpoint_interval=1000",
        f"train.eval_interval={EVAL_EVERY}", "train.eval_tokens=256"]


def complete_checkpoints(run_dir: Path) -> list[int]:
    # olmo-core writes .metadata.json last: its presence makes a directory a checkpoint.
    return sorted(int(p.name[4:]) for p in (run_dir / "checkpoints").glob("step*")
                  if (p / ".metadata.json").exists())


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """run.py in a process group of its own, as a terminal starts a command (Ctrl-C signals the
    group)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def signal_after_step(proc: subprocess.Popen, run_dir: Path, step: int, signum: int) -> int:
    """Send ``signum`` to the run's process group once metrics.jsonl records ``step``; the last
    step recorded when it was sent."""
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        logged = [r["step"] for r in read_partial_jsonl(run_dir / "metrics.jsonl")]
        if logged and logged[-1] >= step:
            os.killpg(proc.pid, signum)
            return logged[-1]
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before step {step} (rc {proc.poll()})")


@pytest.mark.slow  # trains
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_within_the_step_saves_it_and_the_same_command_resumes(
        data_dir: Path, tmp_path: Path, signum: int, code: int) -> None:
    run_dir, name = tmp_path / "run", signal.Signals(signum).name
    args = [f"data.output_dir={data_dir}", *LONG, f"hydra.run.dir={run_dir}"]
    log = tmp_path / "stopped.log"
    proc = start(args, tmp_path, log)
    sent_after = signal_after_step(proc, run_dir, 3, signum)
    assert proc.wait(timeout=300) == code, log.read_text()[-4000:]
    out = log.read_text()
    stopped = re.findall(rf"stopped at step (\d+)/{STEPS} \({name}\): resume with the same command",
                         out)
    assert len(stopped) == 1, out[-4000:]
    n = int(stopped[0])
    assert sent_after < n <= sent_after + 2, (sent_after, n)  # the step it was in (or the next)
    assert "finished" not in out and "Traceback" not in out, out[-4000:]
    assert complete_checkpoints(run_dir) == [n]  # that very step, whole
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["step"]] == list(range(1, n + 1))  # (0: the start)
    # No evaluation off the schedule (the end-of-training one belongs to step 40 only).
    evaluated = [r["step"] for r in records if any(k.startswith("eval/") for k in r)]
    assert all(s % EVAL_EVERY == 0 for s in evaluated), evaluated

    if signum == signal.SIGTERM:
        return  # resuming is the same for both: checked once
    resumed = start(args, tmp_path, tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-4000:]
    out = (tmp_path / "resumed.log").read_text()
    assert f"resuming at step {n} of {STEPS} from" in out and f"finished at step {STEPS}/{STEPS}" in out
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert [s for s in steps if s] == list(range(1, STEPS + 1)) and steps.count(0) <= 1  # one each
    evaluated = [r["step"] for r in records if any(k.startswith("eval/") for k in r)]
    assert evaluated == [*range(EVAL_EVERY, STEPS, EVAL_EVERY), STEPS]
