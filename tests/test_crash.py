"""A run interrupted twice (SIGKILLed mid-way as a preempted job dies, then stopped early with
``train.stop_at_step``) and resumed each time leaves the same metrics.jsonl and generations.jsonl as
an uninterrupted run: one record per logged step, in order, equal values (reports and plots read
them; bitwise on CPU)."""

from __future__ import annotations

import os
import shutil
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
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 13))  # no step-0 record
    assert [_comparable(r) for r in got] == [_comparable(r) for r in want]
    assert losses(broken) == losses(straight)  # exactly, on CPU
    want_gens, got_gens = (read_jsonl(d / "generations.jsonl") for d in (straight, broken))
    assert [g["step"] for g in want_gens] == [2, 4, 6, 8, 10, 12]
    assert [g["step"] for g in got_gens] == [2, 4, 6, 8, STOP, 10, 12]  # + the stopped run's end
    assert [g for g in got_gens if g["step"] != STOP] == want_gens


# -- killed while saving, out of room while saving ---------------------------------------------------

SMALL = [*(o for o in TINY if not o.startswith(("train.max_steps", "train.checkpoint_interval"))),
         "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "train.max_steps=9",
         "train.checkpoint_interval=3"]


def _records(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r.get("train/CE loss") for r in read_metrics(run_dir)}


def test_killed_while_saving_resumes_from_the_previous_checkpoint(run_cli, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    """SIGKILL while the checkpoint of step 6 is being written (its directory exists, incomplete):
    the next run resumes from step 3, removes the remains, and metrics.jsonl ends with one record
    per step, those before the kill unchanged."""
    run_dir = tmp_path / "run"
    args = [sys.executable, str(REPO / "run.py"), f"data.output_dir={data_dir}", *SMALL,
            f"hydra.run.dir={run_dir}"]
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "2", **CPU},
                                stdout=out, stderr=out, start_new_session=True)
    saving = run_dir / "checkpoints" / "step6-tmp"  # olmo-core writes here, then renames to step6
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and not saving.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert _latest_checkpoint(run_dir) == 3 and saving.exists(), "not killed mid-save"
    before = _records(run_dir)
    assert max(before) <= 6, before  # the step being saved may be logged already

    proc = run_cli(*SMALL, run_dir=run_dir, env=CPU)
    assert "resuming at step 3 of 9 from" in proc.stdout, proc.stdout[-3000:]
    assert f"removing {saving}: an interrupted save left it incomplete" in proc.stdout
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert [s for s in steps if s] == list(range(1, 10)) and steps.count(0) <= 1  # each step once
    after = _records(run_dir)
    assert all(after[s] == loss for s, loss in before.items()), (before, after)  # CPU: exact
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step3", "step6", "step9"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_during_a_save_is_one_line_and_the_next_run_resumes(
        run_cli, data_dir: Path, tmp_path: Path) -> None:
    """The run dir on a small tmpfs (as root; else a file-size limit, RLIMIT_FSIZE): the first
    checkpoint fits, the second does not. The run ends with one error line and no traceback, its
    partial save removed; with room again, the same command resumes from the last complete
    checkpoint and finishes with one metrics record per step."""
    import resource

    disk = tmp_path / "disk"
    mounted = os.geteuid() == 0 and _mount_tmpfs(disk, "200m")
    run_dir = disk / "run"
    try:
        run_cli(*SMALL, "train.stop_at_step=3", run_dir=run_dir, env=CPU)
        assert _latest_checkpoint(run_dir) == 3
        args = [sys.executable, str(REPO / "run.py"), f"data.output_dir={data_dir}", *SMALL,
                f"hydra.run.dir={run_dir}"]
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), **CPU}
        if mounted:  # room for half a checkpoint more
            used = shutil.disk_usage(disk).used
            step3 = sum(p.stat().st_size for p in (run_dir / "checkpoints" / "step3").rglob("*")
                        if p.is_file())
            assert subprocess.run(["mount", "-o", f"remount,size={used + step3 // 2}", str(disk)],
                                  capture_output=True).returncode == 0
            limit = None
        else:  # no file may grow past 1 MiB: the checkpoint's shards do (logs and metrics don't)
            limit = 2**20
        proc = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
            if limit else None)
        assert proc.returncode == 1, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert errors[0].startswith("error: the checkpoint of step 6 did not fit in ")
        assert ("no space left on device" if mounted else "file too large") in errors[0]
        assert errors[0].endswith("make room and run the same command; it resumes from step 3")
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step3"]

        if mounted:
            subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        proc = run_cli(*SMALL, run_dir=run_dir, env=CPU)
        assert "resuming at step 3 of 9 from" in proc.stdout, proc.stdout[-3000:]
        steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
        assert [s for s in steps if s] == list(range(1, 10)) and steps.count(0) <= 1
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)
