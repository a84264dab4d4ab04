"""A run interrupted twice (SIGKILLed mid-way as a preempted job dies, then stopped early with
``train.stop_at_step``) and resumed each time leaves the same metrics.jsonl and generations.jsonl as
an uninterrupted run: one record per logged step, in order, equal values (reports and plots read
them; bitwise on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, TINY, losses, read_jsonl

from olmo_exp.sweep.report import read_metrics

# LWS (heterogeneous blocks) so that resuming is checked on per-layer shapes too; samples every 2
# steps, checkpoints every 3: the stop at 9 adds one sample of its own.
CRASH = ["model=lws_tiny", *TINY, "train.max_steps=12", "train.checkpoint_interval=3",
         "train.eval_interval=3", "generate.interval=2"]
STOP = 9
# Values that differ between any two runs (clock, speed), not between a resumed and a straight
# one; checkpoint/ timings also gain the load time at the step a resumed run starts from.
TIMING = ("wall_time", "throughput/", "system/", "checkpoint/")
# Bitwise equality is a CPU promise (CUDA's embedding backward adds in any order).
CPU = {"CUDA_VISIBLE_DEVICES": ""}


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


def _kill_after_a_checkpoint(args: list[str], run_dir: Path, log: Path) -> None:
    """Start ``run.py`` and SIGKILL its process group once a checkpoint exists and two more steps
    are logged."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", **CPU}
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=log.parent, env=env, stdout=out, stderr=out,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            checkpoint = _latest_checkpoint(run_dir)
            if checkpoint and max(_logged_steps(run_dir), default=0) >= checkpoint + 2:
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]


def test_interrupted_and_resumed_run_equals_uninterrupted(run_cli, data_dir: Path,
                                                          tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    # The uninterrupted run also logs to wandb (offline): logging must not change training.
    run_cli(*CRASH, "wandb.enabled=true", "wandb.mode=offline", run_dir=straight, env=CPU)
    offline_runs = list((straight / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))

    # 1. Killed: after checkpoint C, before the stop step.
    _kill_after_a_checkpoint([sys.executable, str(REPO / "run.py"), f"data.output_dir={data_dir}",
                              *CRASH, f"hydra.run.dir={broken}"], broken, tmp_path / "killed.log")
    checkpoint, logged = _latest_checkpoint(broken), _logged_steps(broken)
    assert 0 < checkpoint < max(logged) < STOP, (checkpoint, logged)

    # 2. Resumed from C, stopped early at STOP (a checkpoint and a sample there) ...
    proc = run_cli(*CRASH, f"train.stop_at_step={STOP}", run_dir=broken, env=CPU)
    assert f"resuming at step {checkpoint} of 12 from" in proc.stdout
    # the run says what differs from the attempt before it (and keeps both configs)
    assert f"changed since the last attempt: train.stop_at_step: None -> {STOP}" in proc.stdout
    assert "Checkpoint successfully loaded" in (broken / "train.log").read_text()
    assert _latest_checkpoint(broken) == STOP and max(losses(broken)) == STOP
    # 3. ... and run again to the end.
    proc = run_cli(*CRASH, run_dir=broken, env=CPU)
    assert f"resuming at step {STOP} of 12 from" in proc.stdout
    assert f"train.stop_at_step: {STOP} -> None" in proc.stdout
    assert sorted(p.name for p in (broken / ".hydra").glob("attempt-*")) == ["attempt-2", "attempt-3"]

    want, got = read_jsonl(straight / "metrics.jsonl"), read_jsonl(broken / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(13))
    assert [_comparable(r) for r in got] == [_comparable(r) for r in want]
    assert losses(broken) == losses(straight)  # exactly, on CPU
    want_gens, got_gens = (read_jsonl(d / "generations.jsonl") for d in (straight, broken))
    assert [g["step"] for g in want_gens] == [2, 4, 6, 8, 10, 12]
    assert [g["step"] for g in got_gens] == [2, 4, 6, 8, STOP, 10, 12]  # + the stopped run's end
    assert [g for g in got_gens if g["step"] != STOP] == want_gens
