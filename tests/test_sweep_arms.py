"""Seeds are an axis: a real 2-arm x 2-seed sweep, its arm table checked against statistics
computed here from the jobs' own metrics.jsonl (numpy/scipy), and every preset's baseline arm."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, cli, compose, compose_run
from omegaconf import OmegaConf
from scipy import stats

from olmo_exp.base.files import SWEEPS_DIR
from olmo_exp.sweep.arms import baseline_arm, group_arms
from olmo_exp.sweep.report import expand_jobs

VAL = "eval/lm/validation/CE loss"
STEP_TIME, STEP_TOKENS = "throughput/device/train step time (s)", "throughput/device/train step tokens"
PRESETS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


@functools.cache
def preset(name: str) -> tuple[list[list[str]], list[str]]:
    """(every job of ``-m +sweep=NAME train.seed=0,1``, the preset's baseline overrides)."""
    cfg = compose([f"+sweep={name}"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    jobs = expand_jobs(params, [f"+sweep={name}", "train.seed=0,1"])
    return jobs, list(cfg.hydra.callbacks.sweep_report.baseline)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_names_one_baseline_arm_and_documents_seeds(name: str) -> None:
    """One baseline arm per rung (and budget) of a ladder; one in all of any other sweep."""
    from olmo_exp.sweep import rungs

    jobs, baseline = preset(name)
    cfg = compose([f"+sweep={name}"], hydra=True)
    rung_keys, budget = rungs.parse(OmegaConf.to_container(cfg.hydra.callbacks.sweep_report))
    arms = group_arms({"overrides": j, "status": "finished", "metrics": {}} for j in jobs)
    assert len(arms) * 2 == len(jobs)  # two seeds per arm
    parts = rungs.partitions(arms, rung_keys, budget)
    assert len(parts) == 1 or rung_keys  # several parts only where rungs are declared
    for part in parts:
        chosen = baseline_arm(part, baseline)  # raises unless exactly one arm matches
        assert set(baseline) <= set(chosen.overrides)
    assert "train.seed=0,1,2" in (SWEEPS_DIR / f"{name}.yaml").read_text()


EXPECTED_COST = {"kv_heads": "kv_cache_bytes_per_token", "lws_scalars": "flops_per_token",
                 "lws_vs_uniform": "flops_per_token", "ladder_lws": "flops_per_token",
                 "ladder_lws_gpu": "flops_per_token", "ladder_kv": "kv_cache_bytes_per_token",
                 "ladder_kv_gpu": "kv_cache_bytes_per_token", "isoflop": "flops_per_token",
                 "isoflop_gpu": "flops_per_token"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_plots_its_arms_against_the_cost_it_is_about(name: str) -> None:
    """report.png's arm panel: KV-cache bytes for kv_heads, training FLOPs for the LWS presets,
    whatever else differs between the arms (the LWS models' KV heads differ too). Read from the
    figure's artists: each arm's point sits at its jobs' value of the named cost."""
    import matplotlib.pyplot as plt

    from olmo_exp.sweep.arm_report import COSTS, ReportSettings, arm_report, markdown
    from olmo_exp.sweep.jobs import JobData, JobRow
    from olmo_exp.sweep.plots import figure

    cfg = compose([f"+sweep={name}"], hydra=True)
    settings = ReportSettings.from_callback(
        OmegaConf.to_container(cfg.hydra.callbacks.sweep_report))
    assert settings.cost == EXPECTED_COST[name]
    # Two arms that differ in every cost, each in its own order of magnitude: the point of an
    # arm shows which cost is the axis.
    per_arm = {1: {"params": 10, "flops_per_token": 200, "kv_cache_bytes_per_token": 3000},
               2: {"params": 20, "flops_per_token": 100, "kv_cache_bytes_per_token": 4000}}
    data = [JobData(row=JobRow(job=i, overrides="", status="finished", run_dir="",
                               **per_arm[i + 1]),
                    all_overrides=[f"model.n_layers={i + 1}"], curve_tokens_per_step=None,
                    metrics=[{"step": 1, VAL: 3.0 + i}]) for i in range(2)]
    report = arm_report(data, settings)
    assert report.cost == EXPECTED_COST[name]
    # The arm table's cost column is the same cost.
    assert f"| model.n_layers=2 | 1 | {per_arm[2][EXPECTED_COST[name]]:,} | 4.0000 ± – |" in \
        markdown(report)
    fig = figure(data, report, "test")
    try:
        panel = next(ax for ax in fig.axes if ax.get_title().startswith("arms"))
        assert panel.get_xlabel() == COSTS[EXPECTED_COST[name]]
        points = {c.get_label().split(" (")[0]: (list(c.lines[0].get_xdata()),
                                                 list(c.lines[0].get_ydata()))
                  for c in panel.containers}
        assert points == {f"model.n_layers={n}": ([per_arm[n][EXPECTED_COST[name]]], [2.0 + n])
                          for n in (1, 2)}
    finally:
        plt.close(fig)


def test_an_unknown_cost_axis_is_refused_before_any_job(tmp_path: Path, data_dir: Path) -> None:
    proc = cli("-m", "+sweep=kv_heads", "hydra.callbacks.sweep_report.cost=speed",
               f"data.output_dir={data_dir}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        "error: hydra.callbacks.sweep_report.cost='speed' is invalid: one of "
        "kv_cache_bytes_per_token, flops_per_token, params or null (the first that differs)"]
    assert list(tmp_path.iterdir()) == []  # nothing started, no sweep dir


def t_ci(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values)
    return stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))


@pytest.mark.slow  # trains 4 tiny runs
def test_two_arms_two_seeds_arm_table(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    keys = ("train.max_steps", "train.eval_interval", "train.checkpoint_interval")
    overrides = [o for o in TINY if o.split("=")[0] not in keys]
    proc = cli("-m", f"data.output_dir={data_dir}", *overrides, "train.max_steps=3",
               "train.eval_interval=1", "train.checkpoint_interval=3",
               "model.n_layers=1,2", "train.seed=0,1", f"hydra.sweep.dir={sweep}",
               # the command line picks the baseline arm and the window of the last-k mean
               'hydra.callbacks.sweep_report.baseline=["model.n_layers=2"]',
               "hydra.callbacks.sweep_report.last_k=2", cwd=tmp_path, check=True)
    assert "error" not in proc.stderr.lower(), proc.stderr[-3000:]
    with open(sweep / "report.csv") as f:
        jobs = list(csv.DictReader(f))
    assert [j["overrides"] for j in jobs] == [
        "model.n_layers=1 train.seed=0", "model.n_layers=1 train.seed=1",
        "model.n_layers=2 train.seed=0", "model.n_layers=2 train.seed=1"]
    final: dict[tuple[int, int], float] = {}
    last2: dict[tuple[int, int], float] = {}
    for job, (layers, seed) in zip(jobs, [(1, 0), (1, 1), (2, 0), (2, 1)], strict=True):
        assert job["status"] == "finished"
        records = [OmegaConf.to_container(OmegaConf.create(line)) for line in
                   (Path(job["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        evals = [r[VAL] for r in records if VAL in r]
        assert len(evals) >= 2
        final[layers, seed], last2[layers, seed] = evals[-1], float(np.mean(evals[-2:]))
        # Honest speed: training steps alone, summed over the steps (eval time left out).
        timed = [r for r in records if STEP_TIME in r]
        assert [r["step"] for r in timed] == [1, 2, 3]
        seconds = sum(r[STEP_TIME] for r in timed)
        tokens = sum(r[STEP_TOKENS] for r in timed)
        assert tokens == 3 * 4 * 64  # 3 steps x 4 sequences x 64 tokens, one device
        assert float(job["train_wall_s"]) == pytest.approx(seconds)
        assert float(job["tokens_per_s_device"]) == pytest.approx(tokens / seconds)
        # Steps 2 and 3 took less than the time between the step 1 and step 3 records, which
        # also holds their evaluations and logging.
        wall = {r["step"]: r["wall_time"] for r in records}
        assert sum(r[STEP_TIME] for r in timed[1:]) < wall[3] - wall[1]
    # Different seeds really are different runs.
    assert final[1, 0] != final[1, 1] and final[2, 0] != final[2, 1]

    with open(sweep / "report_arms.csv") as f:
        rows = {(r["arm"], r["metric"]): r for r in csv.DictReader(f)}
    for values, metric in ((final, "val loss"), (last2, "val loss, mean of last 2 evals")):
        for layers in (1, 2):
            row = rows[f"model.n_layers={layers}", metric]
            x = [values[layers, 0], values[layers, 1]]
            assert row["n_seeds"] == "2" and row["seeds"] == "0 1"
            assert float(row["mean"]) == pytest.approx(np.mean(x), rel=1e-12)
            assert float(row["std"]) == pytest.approx(np.std(x, ddof=1), rel=1e-12)
            lo, hi = t_ci(x)
            assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((lo, hi))
        assert rows["model.n_layers=2", metric]["baseline"] == "True"
        assert rows["model.n_layers=2", metric]["verdict"] == ""
        diff_row = rows["model.n_layers=1", metric]
        diffs = [values[1, s] - values[2, s] for s in (0, 1)]  # paired by seed
        lo, hi = t_ci(diffs)
        assert float(diff_row["diff_vs_baseline"]) == pytest.approx(np.mean(diffs), rel=1e-12)
        assert (float(diff_row["diff_ci_low"]), float(diff_row["diff_ci_high"])) == \
            pytest.approx((lo, hi))
        assert float(diff_row["p_value"]) == pytest.approx(
            stats.ttest_rel([values[1, s] for s in (0, 1)], [values[2, s] for s in (0, 1)]).pvalue)
        verdict = "better" if hi < 0 else "worse" if lo > 0 else "within noise"
        assert diff_row["verdict"] == verdict and diff_row["n_pairs"] == "2"

    # report.md: the arm table above the per-job table, with the same numbers.
    md = (sweep / "report.md").read_text()
    assert md.index("## Arms") < md.index("## Jobs")
    assert "Baseline arm: `model.n_layers=2`" in md
    # the first table under "## Arms" is the validation loss's (other eval metrics follow)
    arm1 = next(ln for ln in md.splitlines() if ln.startswith("| model.n_layers=1 | 2 |"))
    x = [final[1, 0], final[1, 1]]
    assert f"{np.mean(x):.4f} ± {np.std(x, ddof=1):.4f}" in arm1
    assert f"{np.mean([final[1, s] - final[2, s] for s in (0, 1)]):.4f} [" in arm1
    arm2 = next(ln for ln in md.splitlines() if ln.startswith("| model.n_layers=2 | 2 |"))
    assert "eval/lm/validation/BPB mean ± std" in md and "validation/tokens" not in md
    assert "| baseline |" in arm2



def test_sweep_jobs_are_named_grouped_and_tagged_in_wandb(tmp_path: Path) -> None:
    from olmo_exp.runtime.run import name_sweep_job

    OmegaConf.save(OmegaConf.create({"hydra": {
        "sweeper": {"params": {"model.n_kv_heads": "12,6"}},
        "overrides": {"task": ["+sweep=kv_heads", "train.seed=0,1", "train.max_steps=5"]}}}),
        tmp_path / "multirun.yaml")
    config = compose_run()
    name_sweep_job(config, tmp_path, ["+sweep=kv_heads", "train.seed=1", "train.max_steps=5",
                                      "model.n_kv_heads=6"])
    assert config.wandb.group == str(tmp_path)
    assert config.wandb.name == "train.seed=1 model.n_kv_heads=6"
    assert config.wandb.tags == ["arm:model.n_kv_heads=6", "seed:1"]
