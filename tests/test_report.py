"""The sweep report tells a job's state as it is: on a shared filesystem whose locks are not
local ones, for a job resumed with another budget or that failed once and then finished, for a
loss that went NaN, with settings that make no statistic; and its training time holds no
checkpoint saves."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import logging
import math
import os
import time
from pathlib import Path

import pytest
from conftest import TINY, cli, compose, compose_run
from omegaconf import OmegaConf

from olmo_exp.runtime.console import FILE_FORMAT, STEP_TIME, TRAIN_LOSS, VAL_LOSS
from olmo_exp.runtime.run import Run
from olmo_exp.sweep.report import read_job, write_report


def attempt(run_dir: Path, *overrides: str) -> None:
    """What run.py writes as an attempt starts in ``run_dir`` (.hydra/, then .hydra/attempt-N/)."""
    Run(config=compose_run(*overrides), run_dir=run_dir,
        hydra_files={"config.yaml": compose(overrides),
                     "overrides.yaml": OmegaConf.create(list(overrides))},
        fresh_dir=False)._write_hydra_files()


def log_metrics(run_dir: Path, steps: range, val: dict[int, float] | None = None) -> None:
    """metrics.jsonl records as MetricsFileCallback appends them (olmo-core's metric names)."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        for step in steps:
            record = {"step": step, TRAIN_LOSS: 9.0 - step / 10, STEP_TIME: 0.1,
                      "throughput/device/train step tokens": 64.0, "wall_time": time.time()}
            if val and step in val:
                record[VAL_LOSS] = val[step]
            f.write(json.dumps(record) + "\n")


def backdate(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def log_failure(run_dir: Path, seconds_ago: float, error: str) -> None:
    """olmo-core's failure line in train.log (Trainer.fit), as the run's file handler writes it."""
    record = logging.LogRecord("olmo_core.train.trainer", logging.ERROR, __file__, 0,
                               f"Training failed due to:\n{error}", None, None)
    record.created = time.time() - seconds_ago
    record.msecs = (record.created % 1) * 1000
    with open(run_dir / "train.log", "a") as f:
        f.write(logging.Formatter(FILE_FORMAT).format(record) + "\n")


# -- 1. the report on a shared filesystem ------------------------------------------------------

REAL_FLOCK = fcntl.flock


def flock_as(filesystem: str):
    """fcntl.flock as these filesystems answer it: NFS emulates flock with POSIX locks, which
    refuse a descriptor not open for writing (EBADF); Lustre mounted without flock has none
    (ENOSYS); a failing disk fails everything (EIO)."""

    def flock(fd: int, operation: int) -> None:
        if filesystem == "nfs":
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY \
                    and operation & fcntl.LOCK_EX:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return REAL_FLOCK(fd, operation)
        raise OSError(*{"lustre": (errno.ENOSYS, os.strerror(errno.ENOSYS)),
                        "broken": (errno.EIO, os.strerror(errno.EIO))}[filesystem])

    return flock


def finished_sweep(sweep_dir: Path, n: int = 1) -> None:
    for job in range(n):
        run_dir = sweep_dir / str(job)
        attempt(run_dir, "train.max_steps=4", f"train.seed={job}")
        log_metrics(run_dir, range(1, 5), {4: 6.0 + job})


@pytest.mark.parametrize("filesystem", ["nfs", "lustre"])
def test_the_report_is_written_where_flock_is_not_local(
        filesystem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from olmo_exp.sweep.callback import SweepReportCallback

    finished_sweep(tmp_path)
    monkeypatch.setattr(fcntl, "flock", flock_as(filesystem))
    with pytest.warns() if filesystem == "lustre" else _nothing():  # filelock: a soft lock
        SweepReportCallback()._write(tmp_path)
    assert "error" not in capsys.readouterr().err
    with open(tmp_path / "report.csv") as f:
        assert [(r["job"], r["status"]) for r in csv.DictReader(f)] == [("0", "finished")]


class _nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_report_that_cannot_be_written_says_so_in_one_line_and_how_to_write_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from olmo_exp.sweep import report
    from olmo_exp.sweep.callback import SweepReportCallback

    finished_sweep(tmp_path)
    monkeypatch.setattr(fcntl, "flock", flock_as("broken"))
    SweepReportCallback()._write(tmp_path)  # no exception for Hydra to turn into a warning
    err = capsys.readouterr().err.splitlines()
    command = f"python -m olmo_exp.sweep.report {tmp_path}"
    assert err == [f"error: the report of sweep {tmp_path} was not written "
                   f"(OSError: [Errno {errno.EIO}] {os.strerror(errno.EIO)}); "
                   f"write it with: {command}"]
    assert not (tmp_path / "report.csv").exists()
    monkeypatch.setattr(fcntl, "flock", REAL_FLOCK)  # the filesystem is back: the command works
    assert report.main(command.split()[3:]) == 0
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.png").exists()


# -- 3. the latest attempt decides -------------------------------------------------------------


@pytest.mark.parametrize("first, second, steps, status", [
    (4, 8, 4, "running"),   # resumed for more steps: step 4 is not the end any more
    (4, 8, 8, "finished"),
    (8, 4, 4, "finished"),  # resumed with fewer: it ended at step 4 (it will never reach 8)
])
def test_the_latest_attempt_decides_the_last_step(first: int, second: int, steps: int,
                                                  status: str, tmp_path: Path) -> None:
    attempt(tmp_path, f"train.max_steps={first}")
    log_metrics(tmp_path, range(1, min(first, steps) + 1))
    attempt(tmp_path, f"train.max_steps={second}")
    assert (tmp_path / ".hydra" / "attempt-2" / "config.yaml").exists()
    log_metrics(tmp_path, range(min(first, steps) + 1, steps + 1))
    assert read_job(tmp_path, 0, None).row.status == status


@pytest.mark.parametrize("failed_in", ["error.txt", "train.log"])
def test_a_failure_of_an_earlier_attempt_is_history(failed_in: str, tmp_path: Path) -> None:
    from olmo_exp.sweep.failures import write_error_file

    attempt(tmp_path, "train.max_steps=8")
    log_metrics(tmp_path, range(1, 4))
    if failed_in == "error.txt":
        write_error_file(tmp_path, "RuntimeError: CUDA out of memory\n")
        backdate(tmp_path / "error.txt", 60)
    else:
        log_failure(tmp_path, 60, "RuntimeError: CUDA out of memory")
    backdate(tmp_path / ".hydra" / "config.yaml", 120)
    assert (read_job(tmp_path, 0, None).row.status,
            read_job(tmp_path, 0, None).row.error) == ("failed", "RuntimeError: CUDA out of memory")

    attempt(tmp_path, "train.max_steps=8")  # the second attempt starts now, and finishes
    log_metrics(tmp_path, range(4, 9))
    assert read_job(tmp_path, 0, None).row.status == "finished"

    # ... unless it fails too: its own failure counts.
    if failed_in == "error.txt":
        write_error_file(tmp_path, "ValueError: again\n", keep=True)  # the old one is no account
    else:
        log_failure(tmp_path, 0, "ValueError: again")
    row = read_job(tmp_path, 0, None).row
    assert (row.status, row.error) == ("failed", "ValueError: again")


# -- 4. statistics that can't silently go wrong --------------------------------------------------


def test_a_nan_loss_is_its_own_status_never_ranked_or_averaged(tmp_path: Path) -> None:
    from olmo_exp.sweep.callback import progress

    finals = [3.2, math.nan, 3.0, 3.1]
    for job, final in enumerate(finals):
        run_dir = tmp_path / str(job)
        attempt(run_dir, "train.max_steps=4", f"train.seed={job}")
        log_metrics(run_dir, range(1, 5), {2: 4.0, 3: 3.5, 4: final})
    rows = write_report(tmp_path)
    assert [r.status for r in rows] == ["finished", "diverged", "finished", "finished"]
    assert rows[1].error == "validation loss is nan at step 4"
    assert progress(rows) == "4/4 jobs done, 1 diverged"
    md = (tmp_path / "report.md").read_text().split("## Jobs", 1)[1]
    ranks = [(ln.split(" | ")[0], ln.split(" | ")[1]) for ln in md.splitlines()
             if ln.startswith("| ") and "train.seed" in ln]
    assert ranks == [("| 1", "2"), ("| 2", "3"), ("| 3", "0"), ("| –", "1")]
    with open(tmp_path / "report_arms.csv") as f:
        arm = next(r for r in csv.DictReader(f) if r["metric"] == "val loss")
    assert float(arm["mean"]) == pytest.approx((3.2 + 3.0 + 3.1) / 3)
    assert (arm["n_seeds"], arm["seeds"], arm["n_diverged"]) == ("3", "0 2 3", "1")
    assert "1 diverged" in (tmp_path / "report.md").read_text().split("## Jobs")[0]


@pytest.mark.parametrize("setting, valid", [
    ("confidence=95", "a fraction between 0 and 1 (e.g. 0.95 for a 95% interval)"),
    ("last_k=0", "an integer >= 1 (the number of last evaluations averaged, e.g. 3)"),
])
def test_report_settings_that_make_no_statistic_are_refused_before_any_job(
        setting: str, valid: str, tmp_path: Path) -> None:
    proc = cli("-m", "model.n_layers=1,2", f"hydra.callbacks.sweep_report.{setting}",
               "dry_run=true", cwd=tmp_path, check=False)  # a dry run, should the check miss
    assert proc.returncode == 2
    key, value = setting.split("=")
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: hydra.callbacks.sweep_report.{key}={value} is invalid: {valid}"]
    assert list(tmp_path.iterdir()) == []  # nothing started, no sweep dir


def test_the_default_run_has_the_evaluations_the_report_averages() -> None:
    """The report's "mean of the last k evals" (k: the default last_k) exists for a default job."""
    cfg = compose([], hydra=True)
    last_k = cfg.hydra.callbacks.sweep_report.last_k
    train = compose_run().train
    interval, at_end = train.eval_schedule()
    evals = train.max_steps // interval + at_end
    assert evals >= last_k >= 1, (evals, last_k)


# -- 5. step time holds no checkpoint save ------------------------------------------------------

SLOW_SAVE_S = 2.0


def _slow_save_worker(config_dict: dict, run_dir: str, data_dir: str) -> None:
    """The real training worker, saving to a slow disk: each checkpoint save takes SLOW_SAVE_S
    longer; each save's step and duration go to saves.jsonl."""
    from olmo_core.train.trainer import Trainer

    from olmo_exp.runtime.worker import train_worker

    save = Trainer.save_checkpoint

    def slow_save(self: Trainer, *args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        time.sleep(SLOW_SAVE_S)
        path = save(self, *args, **kwargs)
        with open(Path(run_dir) / "saves.jsonl", "a") as f:
            f.write(json.dumps({"step": self.global_step,
                                "seconds": time.perf_counter() - start}) + "\n")
        return path

    Trainer.save_checkpoint = slow_save  # type: ignore[method-assign]
    train_worker(config_dict, run_dir, data_dir)


@pytest.mark.slow  # trains 4 steps
def test_step_time_holds_no_checkpoint_save(data_dir: Path, tmp_path: Path) -> None:
    from olmo_exp.data.prep import prepare
    from olmo_exp.runtime import launch

    tiny = [o for o in TINY if o.split("=")[0] not in ("train.max_steps", "train.checkpoint_interval")]
    config = compose_run(f"data.output_dir={data_dir}", *tiny, "train.max_steps=4",
                         "train.checkpoint_interval=1")
    manifest = prepare(config.data, config.validate())
    launch.spawn(_slow_save_worker, (config.to_dict(), str(tmp_path), str(manifest.root)),
                 nproc=1, log_dir=tmp_path / "logs")
    saves = {r["step"]: r["seconds"]
             for r in map(json.loads, (tmp_path / "saves.jsonl").read_text().splitlines())}
    records = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text()
                                         .splitlines())}
    assert sorted(saves) == [1, 2, 3, 4]  # checkpoint_interval=1: every step saved
    for step in (1, 2, 3, 4):
        # Each save ran between the step's start and its record: it took longer than the step's
        # time (its sleep alone does), so a step time holding the save could not be below it.
        assert records[step][STEP_TIME] < saves[step], (step, records[step][STEP_TIME], saves)
    for step in (2, 3, 4):
        assert records[step]["wall_time"] - records[step - 1]["wall_time"] > saves[step]


# -- issue 26.5: a report read at a glance -------------------------------------------------------


def kv_sweep(sweep_dir: Path, evals: dict[int, float]) -> None:
    """Two arms (8 and 4 KV heads) x two seeds, finished, each evaluated at ``evals``' steps."""
    for job, (kv, seed) in enumerate([(8, 0), (8, 1), (4, 0), (4, 1)]):
        run_dir = sweep_dir / str(job)
        attempt(run_dir, "train.max_steps=4", f"model.n_kv_heads={kv}", f"train.seed={seed}")
        (run_dir / "model_summary.json").write_text(json.dumps({
            "n_params": 1000, "flops_per_token": 5000,  # the same for both arms
            "kv_cache_bytes_per_token_bf16": 512 * kv}))
        log_metrics(run_dir, range(1, 5), {s: v + kv / 100 + seed / 1000 for s, v in evals.items()})


def test_the_arm_table_leads_with_the_cost_and_the_verdict(tmp_path: Path) -> None:
    kv_sweep(tmp_path, {2: 4.0, 4: 3.0})
    OmegaConf.save(OmegaConf.create({"hydra": {
        "overrides": {"task": ["train.max_steps=4", "model.n_kv_heads=8,4", "train.seed=0,1"]},
        "callbacks": {"sweep_report": {"baseline": ["model.n_kv_heads=8"],
                                       "cost": "kv_cache_bytes_per_token"}}}}),
        tmp_path / "multirun.yaml")
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    arms = md.split("## Arms", 1)[1].split("## Jobs")[0]
    table = [ln for ln in arms.splitlines() if ln.startswith("|")]
    assert table[0].split(" | ")[:6] == [
        "| arm", "seeds", "KV-cache bytes per token (bf16)", "val loss mean ± std",
        "Δ val loss [95% CI]", "verdict"]
    assert table[2].startswith("| model.n_kv_heads=8 | 2 | 4,096 | 3.0805 ± 0.0007 | baseline |")
    # -0.04 exactly for both seeds: no spread, an exact difference
    assert table[3].startswith("| model.n_kv_heads=4 | 2 | 2,048 | 3.0405 ± 0.0007 | "
                               "-0.0400 [-0.0400, -0.0400] | better |")
    # 2 evaluations per job, the report averages the last 3: said once, with what to do
    reason = ("*val loss, mean of last 3 evals* is empty for 4 finished jobs: fewer than 3 "
              "evaluations per job; set `hydra.callbacks.sweep_report.last_k` or evaluate more "
              "often (`train.eval_interval`).")
    assert md.count("fewer than 3 evaluations") == 1 and f"- {reason}" in md
    assert "### Full statistics" in arms  # mean ± std and CI of every metric follow


def test_one_colour_per_arm_in_every_panel_and_seeds_as_line_styles(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from olmo_exp.sweep.arm_report import ReportSettings, arm_report
    from olmo_exp.sweep.plots import figure
    from olmo_exp.sweep.report import collect

    kv_sweep(tmp_path, {2: 4.0, 3: 3.5, 4: 3.0})
    data, _ = collect(tmp_path)
    fig = figure(data, arm_report(data, ReportSettings()), "test")
    try:
        train, val, arms = fig.axes[:3]
        assert arms.get_title().startswith("arms")
        arm_color = {c.get_label().split(" (")[0]: c.lines[0].get_color()
                     for c in arms.containers}
        assert len(set(arm_color.values())) == 2
        for panel in (train, val):
            lines = {ln.get_label(): ln for ln in panel.get_lines()}
            assert len(lines) == 4
            for label, line in lines.items():  # '#2 model.n_kv_heads=4 train.seed=0'
                arm, seed = label.split()[1], label.split()[2]
                assert line.get_color() == arm_color[arm], label
                assert line.get_linestyle() == ("-" if seed == "train.seed=0" else "--"), label
    finally:
        plt.close(fig)
