"""A run SIGKILLed mid-way and resumed leaves the same metrics.jsonl and generations.jsonl as an
uninterrupted run: one record per logged step, in order (reports and plots read them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, TINY, read_jsonl

from olmo_exp.report import read_metrics

CRASH = [*TINY, "train.max_steps=10", "train.checkpoint_interval=3", "train.eval_interval=3",
         "generate.interval=2"]
# Values that differ between any two runs (clock, speed), not between a resumed and a straight
# one; checkpoint/ timings also gain the load time at the step a resumed run starts from.
TIMING = ("wall_time", "throughput/", "system/", "checkpoint/")


def _latest_checkpoint(run_dir: Path) -> int:
    # olmo-core writes .metadata.json last: its presence makes a directory a checkpoint.
    steps = [int(p.name[4:]) for p in (run_dir / "checkpoints").glob("step*")
             if (p / ".metadata.json").exists()]
    return max(steps, default=0)


def _logged_steps(run_dir: Path) -> list[int]:
    """Steps in metrics.jsonl while the run may still be writing it (a half line is skipped)."""
    return [r["step"] for r in read_metrics(run_dir)]


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(TIMING)}


def test_killed_and_resumed_run_has_one_record_per_step(run_cli, data_dir: Path,
                                                        tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_cli(*CRASH, run_dir=straight)

    args = [sys.executable, str(REPO / "run.py"), f"data.output_dir={data_dir}", *CRASH,
            f"hydra.run.dir={broken}"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=log,
                                start_new_session=True)
    try:
        # Kill (as a preempted job dies) once a checkpoint exists and two more steps are logged.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            checkpoint = _latest_checkpoint(broken)
            if checkpoint and max(_logged_steps(broken), default=0) >= checkpoint + 2:
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    checkpoint, logged = _latest_checkpoint(broken), _logged_steps(broken)
    assert 0 < checkpoint < max(logged) < 10, (checkpoint, logged)  # the kill came after C, before the end

    proc = run_cli(*CRASH, run_dir=broken)
    assert f"resuming at step {checkpoint} of 10 from" in proc.stdout
    assert "Checkpoint successfully loaded" in (broken / "train.log").read_text()

    want, got = read_jsonl(straight / "metrics.jsonl"), read_jsonl(broken / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(11))
    assert [_comparable(r) for r in got] == [_comparable(r) for r in want]
    want_gens, got_gens = (read_jsonl(d / "generations.jsonl") for d in (straight, broken))
    assert [g["step"] for g in want_gens] == [2, 4, 6, 8, 10]
    assert got_gens == want_gens
