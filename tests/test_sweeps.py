"""Sweep presets (sweeps/), equal-budget pairs, and the report every multirun leaves."""

from __future__ import annotations

import csv
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY, cli, compose, read_jsonl
from omegaconf import OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import SWEEPS_DIR
from olmo_exp.sweep import match
from olmo_exp.sweep.report import expand_jobs

PRESETS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


@functools.cache
def composed(job: tuple[str, ...]):
    return match.compose_run(list(job))


@functools.cache
def preset_jobs(name: str) -> list[list[str]]:
    """Every job of ``-m +sweep=NAME``, expanded as Hydra's basic sweeper does."""
    cfg = compose([f"+sweep={name}"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return expand_jobs(params, [f"+sweep={name}"])


def test_readme_lists_every_preset_with_its_job_count() -> None:
    """The preset table of docs/sweeps.md (what people read before typing ``+sweep=NAME``) names
    every file under sweeps/, no other, and says how many jobs each one really expands to."""
    lines = (REPO / "docs" / "sweeps.md").read_text().split("## Presets", 1)[1].splitlines()
    start = lines.index("| preset | question | jobs |")
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        table[cells[0].strip("`")] = int(cells[-1])
    assert table == {name: len(preset_jobs(name)) for name in PRESETS}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_validates_and_dry_runs(name: str) -> None:
    text = (SWEEPS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# "), "document the question at the top"
    jobs = preset_jobs(name)
    assert len(jobs) > 1
    assert f"{len(jobs)} jobs" in text  # the header says how many jobs
    for job in {tuple(o for o in job if not o.startswith("train.seed=")): job for job in jobs}.values():
        # validate() + the dry run's model summary (meta device, no data), once per model: the
        # seed changes neither
        summary = match.summarize_config(composed(tuple(job)))
        assert summary["n_params"] > 0 and summary["flops_per_token"] > 0


def test_kv_heads_covers_every_divisor_of_n_heads() -> None:
    configs = [composed(tuple(job)) for job in preset_jobs("kv_heads")]
    n_heads = configs[0].model.n_heads
    assert all(c.model.name == "gqa_3kv" for c in configs)
    assert sorted(c.model.n_kv_heads for c in configs) == [
        k for k in range(1, n_heads + 1) if n_heads % k == 0
    ]


def test_lws_scalars_grid() -> None:
    configs = [composed(tuple(job)).model.lws for job in preset_jobs("lws_scalars")]
    grid = {(tuple(c.qkv_scalars), tuple(c.fnn_scalars), c.output_scalars is None) for c in configs}
    assert len(grid) == len(configs) == 8


def test_lws_vs_uniform_pairs_are_matched() -> None:
    models = {composed(tuple(job)).model.name for job in preset_jobs("lws_vs_uniform")}
    assert models == {m for pair in match.PAIRS for m in (pair.uniform, pair.lws)}
    for m in match.check():
        assert abs(m.relative_diff) <= match.TOLERANCE, m
        uniform, lws = (composed((f"model={n}",)).model for n in (m.pair.uniform, m.pair.lws))
        assert not uniform.lws.enabled and lws.lws.enabled


def test_matched_geometry_is_the_computed_one() -> None:
    """The model files carry what the search computes (near the value, to keep the test short)."""
    for pair in match.PAIRS:
        fnn = composed((f"model={pair.lws}",)).model.lws.fnn_scalars
        top, best = match.search(pair, low=fnn[1] - 0.1, high=fnn[1] + 0.1)
        assert top == fnn[1] and abs(best.relative_diff) <= match.TOLERANCE


def test_a_drifted_pair_is_refused(monkeypatch) -> None:
    # An edit that breaks the budget: OpenELM's own FFN schedule has ~15% fewer parameters.
    monkeypatch.setattr(match, "PAIRS", (match.Pair("n_non_embedding_params", "match_uniform",
                                                    "lws_tiny"),))
    with pytest.raises(ConfigError) as err:
        match.check()
    assert err.value.key == "model=lws_tiny" and "within 2%" in str(err.value)


def _cli(*args: str, cwd: Path, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # -m/--help before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    return cli(*flags, f"data.output_dir={data_dir}", *overrides, cwd=cwd,
               env={"HYDRA_FULL_ERROR": "1"}, check=check)


def test_help_lists_presets_from_any_directory(tmp_path: Path, data_dir: Path) -> None:
    proc = _cli("--help", cwd=tmp_path, data_dir=data_dir)
    lines = proc.stdout.splitlines()
    (start,) = [i for i, x in enumerate(lines) if x.strip().startswith("+sweep ")]
    line = lines[start].split()
    for more in lines[start + 1:]:  # a long list wraps onto indented continuation lines
        if not more.startswith(" " * 10):
            break
        line += more.split()
    assert line == ["+sweep", *(f"{name}," for name in PRESETS[:-1]), PRESETS[-1]]


def _refused(proc: subprocess.CompletedProcess, sweep_dir: Path) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert not sweep_dir.exists()  # refused before any job
    return errors[0]


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("override", ["data.sequence_length=2048", "model.d_model=512"])
def test_equal_budget_sweep_follows_every_override(override: str, tmp_path: Path,
                                                   data_dir: Path) -> None:
    """FLOPs per token depend on the sequence length, both budgets on the width: a preset
    declared matched is composed with every override and refused, with the numbers, if it drifts."""
    proc = _cli("-m", "+sweep=lws_vs_uniform", override, "dry_run=true",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, data_dir=data_dir,
                check=False)
    error = _refused(proc, tmp_path / "sweep")
    extra = [override, f"data.output_dir={data_dir}"]
    uniform, lws = (match.summary(["+sweep=lws_vs_uniform", f"model={m}", *extra])
                    for m in ("match_uniform", "match_lws_flops"))
    diff = lws["flops_per_token"] / uniform["flops_per_token"] - 1
    assert abs(diff) > match.TOLERANCE
    assert (f"arm model=match_lws_flops has flops_per_token {lws['flops_per_token']:,} vs "
            f"{uniform['flops_per_token']:,} ({diff:+.2%})") in error, error
    assert f"match: n_non_embedding_params: model=match_uniform {uniform['n_non_embedding_params']:,}" \
        in proc.stderr  # the match is printed


@pytest.mark.slow  # starts processes
def test_a_command_line_pair_declared_matched_is_checked(tmp_path: Path, data_dir: Path) -> None:
    """Any two models typed on the command line, declared matched on a budget: refused when
    they are not (lws_tiny has ~15% fewer non-embedding parameters than match_uniform)."""
    proc = _cli("-m", "model=match_uniform,lws_tiny", "dry_run=true",
                "hydra.callbacks.sweep_report.matched=[n_non_embedding_params]",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, data_dir=data_dir,
                check=False)
    error = _refused(proc, tmp_path / "sweep")
    assert error.startswith("error: hydra.callbacks.sweep_report.matched=['n_non_embedding_params']"
                            " is invalid: the sweep is declared budget-matched but arm "
                            "model=lws_tiny has n_non_embedding_params "), error
    assert "against the baseline arm model=match_uniform, beyond the tolerance of 2%" in error


# -- the report -------------------------------------------------------------------------------

def tiny(*changes: str) -> list[str]:
    """The shared tiny overrides with some values changed (each key given once)."""
    keys = {c.split("=")[0] for c in changes}
    return [o for o in TINY if o.split("=")[0] not in keys] + list(changes)


SWEEP_TINY = tiny("train.max_steps=3", "train.eval_interval=3", "train.checkpoint_interval=3",
                  "generate.interval=2")


@pytest.fixture(scope="module")
def two_point_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    cwd = tmp_path_factory.mktemp("sweep_cwd")
    sweep_dir = cwd / "multirun" / "two"
    proc = _cli("-m", "model.n_layers=1,2", *SWEEP_TINY, f"hydra.sweep.dir={sweep_dir}", cwd=cwd,
                data_dir=data_dir)
    (cwd / "stderr.txt").write_text(proc.stderr)  # what the person saw, beside the sweep
    return sweep_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # starts processes
def test_report_values_equal_the_jobs_metrics(two_point_sweep: Path) -> None:
    # A plain `python run.py -m ...`: our basic launcher ran both jobs, one after the other.
    multirun = OmegaConf.load(two_point_sweep / "multirun.yaml")
    assert multirun.hydra.launcher._target_ == (
        "hydra_plugins.olmo_exp_launcher.CheckedBasicLauncher")
    rows = read_csv(two_point_sweep / "report.csv")
    assert [r["job"] for r in rows] == ["0", "1"]
    # One progress line per change: after each job, not again at the sweep's end and exit.
    report_lines = [ln for ln in (two_point_sweep.parents[1] / "stderr.txt").read_text().splitlines()
                    if ln.startswith("report: ")]
    assert [ln.rsplit("(", 1)[1] for ln in report_lines] == ["1/2 jobs done)", "2/2 jobs done)"]
    assert [r["overrides"] for r in rows] == ["model.n_layers=1", "model.n_layers=2"]
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir == two_point_sweep / row["job"]
        records = read_jsonl(run_dir / "metrics.jsonl")
        summary = json.loads((run_dir / "model_summary.json").read_text())
        train = [r["train/CE loss"] for r in records if "train/CE loss" in r]
        evals = [r for r in records if "eval/lm/validation/CE loss" in r]
        assert row["status"] == "finished" and row["error"] == ""
        assert int(row["step"]) == 3
        assert float(row["final_train_loss"]) == train[-1]
        assert float(row["final_val_loss"]) == evals[-1]["eval/lm/validation/CE loss"]
        assert float(row["final_val_ppl"]) == evals[-1]["eval/lm/validation/PPL"]
        assert float(row["best_val_loss"]) == min(e["eval/lm/validation/CE loss"] for e in evals)
        assert int(row["params"]) == summary["n_params"]
        assert int(row["non_embedding_params"]) == summary["n_non_embedding_params"]
        assert int(row["flops_per_token"]) == summary["flops_per_token"]
        # Speed and time: the job's own records, read here line by line, not through the report.
        # Training steps only: each step's own time and tokens (no eval, sampling, checkpoints).
        times = [r["throughput/device/train step time (s)"] for r in records
                 if "throughput/device/train step time (s)" in r]
        tokens = [r["throughput/device/train step tokens"] for r in records
                  if "throughput/device/train step tokens" in r]
        assert len(times) == len(tokens) == 3  # one record per step (log_interval 1)
        assert float(row["train_wall_s"]) == pytest.approx(sum(times), rel=1e-9)
        assert float(row["tokens_per_s_device"]) == pytest.approx(sum(tokens) / sum(times),
                                                                  rel=1e-9)
        stamps = [r["wall_time"] for r in records]
        assert float(row["train_wall_s"]) < stamps[-1] - stamps[0] + times[0]  # less than it all
        # ... which lies within the job's life on disk: its config was written before training
        # started, its metrics file was last written when the last step was logged.
        started = (run_dir / ".hydra" / "config.yaml").stat().st_mtime
        assert 0 < float(row["train_wall_s"]) <= (run_dir / "metrics.jsonl").stat().st_mtime - started
        assert (run_dir / "loss.png").stat().st_size > 10_000  # each run's own plot
    md = (two_point_sweep / "report.md").read_text()
    jobs_part = md.split("## Jobs", 1)[1]  # after the arm table
    table = [line for line in jobs_part.splitlines()
             if line.startswith("| ") and "model.n_layers" in line]
    by_loss = sorted(rows, key=lambda r: float(r["final_val_loss"]))
    assert [line.split(" | ")[2] for line in table] == [r["overrides"] for r in by_loss]
    assert [line.split(" | ")[0] for line in table] == ["| 1", "| 2"]  # both finished: ranked


@pytest.mark.slow  # uses the trained two-job sweep
def test_report_png_is_readable(two_point_sweep: Path) -> None:
    from PIL import Image

    image = Image.open(two_point_sweep / "report.png").convert("L")
    width, height = image.size
    assert width >= 1000 and height >= 500
    colors = image.getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 20  # axes, curves and legend text, not blank


@pytest.mark.slow  # starts processes
def test_regenerate_from_run_dirs_alone(two_point_sweep: Path, tmp_path: Path) -> None:
    """python -m olmo_exp.sweep.report gives the same report, also for a half-written run."""
    copy = tmp_path / "sweep"
    shutil.copytree(two_point_sweep, copy, ignore=shutil.ignore_patterns("report.*", "checkpoints"))
    proc = subprocess.run([sys.executable, "-m", "olmo_exp.sweep.report", str(copy)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert "| 0 | model.n_layers=1 | finished" in proc.stdout
    original = read_csv(two_point_sweep / "report.csv")
    again = read_csv(copy / "report.csv")
    for a, b in zip(original, again, strict=True):
        assert {k: v for k, v in a.items() if k != "run_dir"} == \
               {k: v for k, v in b.items() if k != "run_dir"}
    # Job 1 is cut mid-line (a run still writing, or killed); a third job never started.
    metrics = copy / "1" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    (copy / "1" / "model_summary.json").write_text('{"n_params": 12')
    multirun = OmegaConf.load(copy / "multirun.yaml")
    multirun.hydra.overrides.task = [o.replace("model.n_layers=1,2", "model.n_layers=1,2,3")
                                     for o in multirun.hydra.overrides.task]
    OmegaConf.save(multirun, copy / "multirun.yaml")
    subprocess.run([sys.executable, "-m", "olmo_exp.sweep.report", str(copy)], cwd=REPO,
                   capture_output=True, text=True, check=True)
    rows = read_csv(copy / "report.csv")
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "finished", "model.n_layers=1"),
        ("1", "running", "model.n_layers=2"),
        ("2", "not started", "model.n_layers=3"),
    ]
    assert rows[1]["step"] == str(json.loads(lines[1])["step"])
    assert rows[1]["params"] == ""  # its half-written summary reads as absent


@pytest.mark.slow  # starts processes
def test_every_invalid_point_is_named_before_anything_starts(tmp_path: Path, data_dir: Path) -> None:
    """The default launcher validates every point first (Hydra's own would train #0, then stop)."""
    proc = _cli("-m", "model.n_kv_heads=4,3,5", *tiny("train.max_steps=2"), cwd=tmp_path,
                data_dir=data_dir, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert errors == [
        f"error: sweep point #{n} (model.n_kv_heads={k}): model.n_kv_heads={k} is invalid: must "
        "divide model.n_heads=8; valid: [1, 2, 4, 8]" for n, k in ((1, 3), (2, 5))]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no multirun/, no run dir: nothing started


@pytest.mark.slow  # starts processes
def test_a_job_failing_at_run_time_is_reported_and_the_others_run(tmp_path: Path,
                                                                   data_dir: Path) -> None:
    """Job 0 passes validation but its run refuses to start (its run dir holds another model's
    checkpoints); job 1 still trains, the report has both, and the sweep exits 1."""
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0" / "checkpoints" / "step2").mkdir(parents=True)
    (sweep_dir / "0" / ".hydra").mkdir()
    (sweep_dir / "0" / ".hydra" / "config.yaml").write_text("model: {n_layers: 99}\n")
    proc = _cli("-m", "model.n_layers=1,2", *tiny("train.max_steps=2"),
                f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, data_dir=data_dir, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    job_lines = [x for x in proc.stderr.splitlines() if x.startswith("error: job #")]
    assert len(job_lines) == 1 and job_lines[0].startswith(
        "error: job #0 (model.n_layers=1) failed: hydra.run.dir="), proc.stderr[-3000:]
    assert "holds checkpoints of a different run" in job_lines[0]
    assert "Traceback" not in proc.stderr
    rows = read_csv(sweep_dir / "report.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "finished")]
    assert rows[0]["error"] == job_lines[0].split(" failed: ", 1)[1].join(["error: ", ""])
    md = (sweep_dir / "report.md").read_text()
    assert "| failed | " in md and "holds checkpoints of a different run" in md
    # the progress line counts the failure apart; the report's lock file is all it leaves (a
    # lock file is never removed: waiters on a removed one would not exclude each other)
    report_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("report: ")]
    assert report_lines[-1].endswith("(2/2 jobs done, 1 failed)"), report_lines
    assert sorted(p.name for p in sweep_dir.glob(".*")) == [".report.lock"]


def test_a_job_that_raised_is_failed_with_its_first_line(tmp_path: Path) -> None:
    """What Hydra hands on_job_end for a job whose task raised (the sweep then stops)."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import open_dict

    from olmo_exp.sweep.callback import SweepReportCallback

    cfg = compose(["train.max_steps=4"], hydra=True)
    sweep_dir = tmp_path / "sweep"
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.runtime.output_dir = str(sweep_dir / "0")
    (sweep_dir / "0").mkdir(parents=True)
    try:
        raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")
    except RuntimeError as e:
        error = e
    callback = SweepReportCallback()
    callback.on_job_start(config=cfg)
    callback.on_job_end(config=cfg, job_return=JobReturn(status=JobStatus.FAILED,
                                                         _return_value=error))
    rows = read_csv(sweep_dir / "report.csv")
    assert [(r["job"], r["status"], r["error"]) for r in rows] == [
        ("0", "failed", "RuntimeError: CUDA out of memory")
    ]
    assert "Traceback" in (sweep_dir / "0" / "error.txt").read_text()
