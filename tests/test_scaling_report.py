"""The report's scaling section from a sweep directory: run dirs written here the way a sweep
leaves them (multirun.yaml, .hydra/, model_summary.json, metrics.jsonl), their final losses drawn
from known laws, so that the report's compute, fit table, multipliers, one-line notes and
loss-vs-compute panel can be checked against the truth without training (the real tiny ladder
is tests/test_ladder*.py, slow). The rung settings' checks before any job starts are here too."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import compose, report_figure
from omegaconf import OmegaConf, open_dict

from olmo_exp.runtime.console import VAL_LOSS
from olmo_exp.sweep.report import write_report
from olmo_exp.sweep.scaling_fit import Law

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUNG = "model.d_model"
TRUE = Law(E=2.0, A=0.3, alpha=0.25, c_ref=1e12)
STEPS, BATCH, SEQ = 20, 4, 64


def flops_per_token(d_model: int) -> int:
    return 12 * 2 * d_model**2 * 4 + 6 * d_model * 1000  # any number that grows with size


def write_sweep(root: Path, widths: list[int], seeds: int = 2, k: float = 1.5,
                noise: float = 0.002, budget: str | None = None) -> Path:
    """Two arms (model=uniform, the baseline, and model=lws, built to be worth k times the
    compute) x widths x seeds, every job finished."""
    rng = np.random.default_rng(0)
    sweep = root / "multirun"
    arms = ["model=uniform", "model=lws"]
    params = {"model": ",".join(a.split("=")[1] for a in arms),
              RUNG: ",".join(map(str, widths)), "train.seed": ",".join(map(str, range(seeds)))}
    callback = {"baseline": ["model=uniform"], "rungs": [RUNG], "budget": budget,
                "confidence": 0.95, "last_k": 1}
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"sweeper": {"params": params}, "overrides": {"task": []},
                              "callbacks": {"sweep_report": callback}}},
                   sweep / "multirun.yaml")
    job = 0
    for arm in arms:
        for width in widths:
            for seed in range(seeds):
                run = sweep / str(job)
                (run / ".hydra").mkdir(parents=True)
                overrides = [arm, f"{RUNG}={width}", f"train.seed={seed}"]
                OmegaConf.save(overrides, run / ".hydra" / "overrides.yaml")
                OmegaConf.save({"train": {"max_steps": STEPS, "global_batch_size": BATCH},
                                "data": {"sequence_length": SEQ}}, run / ".hydra" / "config.yaml")
                fpt = flops_per_token(width)
                (run / "model_summary.json").write_text(json.dumps(
                    {"n_params": 100 * width**2, "n_non_embedding_params": 48 * width**2,
                     "flops_per_token": fpt}))
                compute = fpt * STEPS * BATCH * SEQ
                loss = float(TRUE.loss(compute * (k if arm == "model=lws" else 1.0)))
                records = [{"step": s, "train/CE loss": 5.0} for s in range(1, STEPS + 1)]
                records[-1][VAL_LOSS] = loss + rng.normal(0, noise)
                (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
                job += 1
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


WIDTHS = [32, 64, 128, 256, 512]


@pytest.fixture(scope="module")
def ladder_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Figure]:
    """A 2-arm x 5-rung x 2-seed ladder's sweep dir, reported once, and report.png's figure."""
    sweep = write_sweep(tmp_path_factory.mktemp("ladder"), WIDTHS)
    return sweep, report_figure(sweep)


def test_a_ladder_report_has_the_fit_table_and_the_multiplier(ladder_sweep) -> None:
    sweep, _ = ladder_sweep
    jobs = read_csv(sweep / "report.csv")
    for row in jobs:  # compute = FLOPs per token x tokens trained, not 6N
        width = int(re.search(rf"{RUNG}=(\d+)", row["overrides"]).group(1))
        assert float(row["train_flops"]) == flops_per_token(width) * STEPS * BATCH * SEQ
    md = (sweep / "report.md").read_text()
    assert "## Scaling" in md and "Baseline arm: `model=uniform`." in md
    fit_rows = [ln for ln in md.splitlines() if ln.startswith("| `model=")]
    assert fit_rows[0].startswith("| `model=uniform` (baseline) | 5 | 2/2/2/2/2 |")
    scaling = read_csv(sweep / "report_scaling.csv")
    law = {(r["arm"], r["name"]): r for r in scaling if r["kind"] == "law"}
    for name in ("E", "alpha"):
        value = float(law[("model=uniform", name)]["value"])
        assert abs(value / getattr(TRUE, name) - 1) < 0.05, (name, value)
        assert float(law[("model=uniform", name)]["ci_low"]) <= value
    ks = [r for r in scaling if r["kind"] == "multiplier"]
    assert [r["rung"] for r in ks] == [f"{RUNG}={w}" for w in WIDTHS]
    top = ks[-1]
    assert top["name"] == "k_largest" and abs(float(top["value"]) / 1.5 - 1) < 0.05
    assert float(top["ci_low"]) > 1 and top["verdict"] == "better"
    # The largest arm's loss is reached by the baseline only beyond its own range: said so.
    assert top["note"] == "baseline extrapolated"
    assert f"| `model=lws` | `{RUNG}=512` (largest) |" in md
    # The arm table compares each arm with the baseline at the same rung, paired by seed.
    arms = read_csv(sweep / "report_arms.csv")
    diffs = [r for r in arms if r["metric"] == "val loss" and r["diff_vs_baseline"]]
    assert len(diffs) == len(WIDTHS) and all(float(r["diff_vs_baseline"]) < 0 for r in diffs)
    assert all(r["n_pairs"] == "2" for r in diffs)


@pytest.mark.parametrize("widths", [[64, 128], [64]])
def test_fewer_than_three_computes_per_arm_say_so_in_one_line_and_no_number(
        tmp_path: Path, widths: list[int]) -> None:
    sweep = write_sweep(tmp_path, widths)
    write_report(sweep)
    md = (sweep / "report.md").read_text()
    section = md[md.index("## Scaling"):md.index("## Jobs")]
    notes = [ln for ln in section.splitlines() if "can't fit" in ln]
    count = "two" if len(widths) == 2 else "one"
    assert notes == [f"- can't fit `model={arm}`: {count} distinct compute"
                     f"{'s' if len(widths) == 2 else ''} (a fit needs at least three)"
                     for arm in ("uniform", "lws")]
    # No fit row, no multiplier row, no number in the section but its settings.
    assert not [ln for ln in section.splitlines() if ln.startswith("| `model=")]
    assert "k(C)" not in section and "Per arm: L(C)" not in section
    scaling = read_csv(sweep / "report_scaling.csv")
    assert {r["kind"] for r in scaling} == {"rung", "note"}


def test_a_rung_with_no_finished_seed_is_one_line(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, WIDTHS)
    for job in (8, 9):  # model=uniform at the largest width: both seeds still running
        metrics = sweep / str(job) / "metrics.jsonl"
        metrics.write_text("".join(metrics.read_text().splitlines(True)[:5]))
    write_report(sweep)
    md = (sweep / "report.md").read_text()
    assert f"- can't fit `model=uniform`: rung `{RUNG}=512` has no finished seed" in md
    assert "- no compute multiplier for `model=lws`: the baseline's fit could not be made" in md
    scaling = read_csv(sweep / "report_scaling.csv")
    assert not [r for r in scaling if r["kind"] == "multiplier"]


def test_the_loss_vs_compute_panel_is_in_report_png(ladder_sweep) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    sweep, figure = ladder_sweep
    assert (sweep / "report.png").stat().st_size > 0
    panels = [ax for ax in figure.axes if ax.get_gid() == "scaling"]
    assert len(panels) == 1
    ax = panels[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "training compute (FLOPs)"
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [c.get_label() for c in bars] == ["model=uniform (baseline)", "model=lws"]
    for bar in bars:  # one point per rung, with the seeds' spread as its error bar
        x, y = bar.lines[0].get_data()
        assert len(x) == len(WIDTHS) and bar.has_yerr
    fits = [ln for ln in ax.lines if ln.get_label().startswith("fit: E=")]
    assert len(fits) == 2
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one bootstrap band per arm


def test_isoflop_mode_reports_the_optimal_size_per_budget(tmp_path: Path) -> None:
    """A budget key: per arm and budget a parabola in log N and its vertex, then N* = a C^b."""
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    budgets, widths = [1e14, 1e15, 1e16], [128, 181, 256, 362, 512, 724]
    OmegaConf.save({"hydra": {"sweeper": {"params": {
        "model": "uniform", "train.flops_budget": ",".join(f"{b:g}" for b in budgets),
        RUNG: ",".join(map(str, widths)), "train.seed": "0,1"}}, "overrides": {"task": []},
        "callbacks": {"sweep_report": {"rungs": [RUNG], "budget": "train.flops_budget"}}}},
        sweep / "multirun.yaml")
    rng = np.random.default_rng(0)
    job = 0
    for budget in budgets:
        for width in widths:
            n = 48.0 * width**2
            tokens = budget / (6 * n)
            loss = 1.69 + 406.4 / n**0.34 + 410.7 / tokens**0.28
            for seed in (0, 1):
                run = sweep / str(job)
                (run / ".hydra").mkdir(parents=True)
                OmegaConf.save(["model=uniform", f"train.flops_budget={budget:g}",
                                f"{RUNG}={width}", f"train.seed={seed}"],
                               run / ".hydra" / "overrides.yaml")
                OmegaConf.save({"train": {"max_steps": 1, "global_batch_size": 1},
                                "data": {"sequence_length": 1}}, run / ".hydra" / "config.yaml")
                (run / "model_summary.json").write_text(json.dumps(
                    {"n_non_embedding_params": n, "flops_per_token": 6 * n}))
                (run / "metrics.jsonl").write_text(json.dumps(
                    {"step": 1, VAL_LOSS: loss + rng.normal(0, 0.002)}) + "\n")
                job += 1
    write_report(sweep)
    rows = read_csv(sweep / "report_scaling.csv")
    n_opt = [float(r["value"]) for r in rows if r["kind"] == "isoflop" and r["name"] == "n_opt"]
    assert len(n_opt) == 3 and n_opt == sorted(n_opt)
    b = next(float(r["value"]) for r in rows if r["name"] == "b")
    assert abs(b - 0.28 / 0.62) < 0.05  # Chinchilla's N* exponent: beta / (alpha + beta)
    md = (sweep / "report.md").read_text()
    assert "| `(common overrides only)` | 1e+15 | 6 |" in md


def sweep_config(*overrides: str, task: list[str]):
    cfg = compose(list(overrides), hydra=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = task
    return cfg


LADDER = ["model.d_model=64,128,256", "model=uniform,lws", "train.seed=0,1"]


@pytest.mark.parametrize(("setting", "error"), [
    ("hydra.callbacks.sweep_report.rungs=[model.d_modl]",
     "hydra.callbacks.sweep_report.rungs=['model.d_modl'] is invalid: no job overrides "
     "model.d_modl; the jobs override: model.d_model, model"),
    ("hydra.callbacks.sweep_report.rungs=[train.seed]",
     "hydra.callbacks.sweep_report.rungs=['train.seed'] is invalid: train.seed is an axis of "
     "its own; the rung keys are those that change size, among: model.d_model, model"),
    ("hydra.callbacks.sweep_report.budget=model.d_model",
     "hydra.callbacks.sweep_report.budget='model.d_model' is invalid: isoFLOP mode needs "
     "hydra.callbacks.sweep_report.rungs: the keys that vary model size within a budget, "
     "among: model.d_model, model"),
    ("hydra.callbacks.sweep_report.rungs=5",
     "hydra.callbacks.sweep_report.rungs=5 is invalid: a list of override keys that change "
     "scale, e.g. [model.d_model,model.n_layers]"),
])
def test_rung_settings_are_checked_before_any_job(setting: str, error: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    from olmo_exp.sweep.callback import _check_sweep

    cfg = sweep_config(setting, 'hydra.callbacks.sweep_report.baseline=["model=uniform"]',
                       task=LADDER)
    with pytest.raises(SystemExit) as exit_:
        _check_sweep(cfg)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {error}"]


def test_a_declared_ladder_picks_one_baseline_per_rung(capsys: pytest.CaptureFixture) -> None:
    """Without the rung keys the baseline overrides select 3 arms (one per width) and the sweep
    is refused; declared, each rung has its one baseline arm and the sweep goes ahead."""
    from olmo_exp.sweep.callback import _check_sweep

    base = 'hydra.callbacks.sweep_report.baseline=["model=uniform"]'
    with pytest.raises(SystemExit):
        _check_sweep(sweep_config(base, task=LADDER))
    assert "matches 3 arms" in capsys.readouterr().err
    _check_sweep(sweep_config(base, "hydra.callbacks.sweep_report.rungs=[model.d_model]",
                              task=LADDER))
    assert capsys.readouterr().err == ""


def test_every_job_needs_a_numeric_budget() -> None:
    from olmo_exp.base.errors import ConfigError
    from olmo_exp.sweep import rungs

    jobs = [["model.d_model=64", "train.flops_budget=1e15"],
            ["model.d_model=128", "train.flops_budget=lots"]]
    with pytest.raises(ConfigError) as err:
        rungs.check(["model.d_model"], "train.flops_budget", jobs)
    assert str(err.value) == (
        "hydra.callbacks.sweep_report.budget='train.flops_budget' is invalid: every job must set "
        "train.flops_budget to a positive number of FLOPs; job [model.d_model=128 "
        "train.flops_budget=lots] has 'lots'")
    rungs.check(["model.d_model"], "train.flops_budget", jobs[:1])  # a number: accepted
