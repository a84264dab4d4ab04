"""A real tiny ladder end to end: ``python run.py -m +sweep=ladder_lws`` cut to 3 rungs x 2 arms x
2 seeds of a few steps each (12 real trainings, slow), and every preset composed with every
launcher (fast: compose and validate, nothing runs)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import CPU_HOST, cli, compose, read_jsonl, report_figure
from omegaconf import OmegaConf

from olmo_exp.base.files import SWEEPS_DIR
from olmo_exp.config.compose import run_config
from olmo_exp.data.check import check_run
from olmo_exp.sweep.report import expand_jobs

RUNGS = (24, 32, 40)
SEQ, BATCH = 32, 2
TINY_LADDER = [
    f"model.d_model={','.join(map(str, RUNGS))}",
    "train.size_rule.tokens_per_param=0.01",   # 3 to 7 steps of 2 x 32 tokens
    f"train.size_rule.batch_size={BATCH}", "train.micro_batch_size=null",
    f"data.sequence_length={SEQ}", "data.bpe_vocab_size=8192",  # the session's prepared sample
    "train.eval_tokens=64", "train.log_interval=1", "train.warmup_steps=1",
    "generate.max_new_tokens=2",
]


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.slow  # 12 real trainings
def test_a_tiny_ladder_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    cli("-m", "+sweep=ladder_lws", *TINY_LADDER, f"data.output_dir={data_dir}",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    runs = _jobs(sweep)
    assert len(runs) == len(RUNGS) * 2 * 2

    # Every job's compute in report.csv = model_summary.json's FLOPs per token x tokens trained.
    with open(sweep / "report.csv") as f:
        rows = {int(r["job"]): r for r in csv.DictReader(f)}
    params: dict[tuple[int, str], list[int]] = {}
    for run in runs:
        summary = json.loads((run / "model_summary.json").read_text())
        last_step = max(r["step"] for r in read_jsonl(run / "metrics.jsonl"))
        train = summary["train"]  # as validation resolved it (.hydra/config.yaml: as given)
        tokens = last_step * train["global_batch_size"] * SEQ
        assert float(rows[int(run.name)]["train_flops"]) == summary["flops_per_token"] * tokens
        assert rows[int(run.name)]["status"] == "finished"
        # the rule set the budget: 0.01 x the layers' parameters (model_summary.json's per-layer
        # counts, olmo-core's), trained in whole steps
        n_layer_params = sum(layer["params"] for layer in summary["layers"])
        assert train["max_tokens"] == math.ceil(0.01 * n_layer_params)
        assert last_step == train["max_steps"] == math.ceil(train["max_tokens"] / (BATCH * SEQ))
        arm = "lws" if summary["lws"]["match"] else "uniform"
        params.setdefault((summary["d_model"], arm), []).append(summary["n_non_embedding_params"])
        if arm == "lws":  # the free scalar, solved for this rung
            assert summary["lws"]["fnn_scalars"][0] == 0.5
            assert summary["lws"]["fnn_scalars"][1] != 4.0

    # The LWS arm matches the uniform arm's parameters at every rung (<= 1%), with a knob
    # solved per rung (a single hand-picked value would drift as d_model changes).
    for d_model in RUNGS:
        (uniform,), (lws,) = set(params[(d_model, "uniform")]), set(params[(d_model, "lws")])
        assert abs(lws / uniform - 1) <= 0.01, (d_model, lws, uniform)
    summaries = [json.loads((r / "model_summary.json").read_text()) for r in runs]
    tops = {s["d_model"]: s["lws"]["fnn_scalars"][1] for s in summaries if s["lws"]["match"]}
    assert len(set(tops.values())) >= 2, tops  # solved per rung, not one value for all

    # The report fits the ladder: the fit table, the multiplier, and the loss-vs-compute panel.
    md = (sweep / "report.md").read_text()
    assert "## Scaling" in md
    fit_rows = [ln for ln in md.splitlines() if ln.startswith("| `model/lws=")]
    assert any(r.startswith("| `model/lws=off` (baseline) | 3 |") for r in fit_rows), md
    assert any(r.startswith("| `model/lws=openelm_matched` | 3 |") for r in fit_rows), md
    with open(sweep / "report_scaling.csv") as f:
        scaling = list(csv.DictReader(f))
    assert {r["kind"] for r in scaling} >= {"law"}
    assert (sweep / "report.png").stat().st_size > 0
    _assert_scaling_panel(sweep)


def _assert_scaling_panel(sweep: Path) -> None:
    """report.png redrawn from the sweep dir (as ``python -m olmo_exp.sweep.report DIR`` does),
    keeping the figure: it has the loss-vs-compute panel, both arms on a log compute axis."""
    from matplotlib.container import ErrorbarContainer

    figure = report_figure(sweep)
    (panel,) = [ax for ax in figure.axes if ax.get_gid() == "scaling"]
    assert panel.get_xscale() == "log"
    bars = [c for c in panel.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and all(len(b.lines[0].get_data()[0]) == len(RUNGS) for b in bars)


LADDER_PRESETS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")
                        if p.stem.startswith(("ladder_", "isoflop")))
LAUNCHERS = ["sequential", "local", "slurm"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("name", LADDER_PRESETS)
def test_every_ladder_preset_composes_with_every_launcher(name: str, launcher: str) -> None:
    """A ladder is an ordinary -m sweep: each preset composes with each launcher (SLURM's node
    settings included), and its first and last jobs validate (the per-rung match and the size
    rule resolve) -- the GPU presets against a host with a GPU."""
    cfg = compose([f"+sweep={name}", f"hydra/launcher={launcher}"], hydra=True)
    assert cfg.hydra.launcher._target_
    assert list(cfg.hydra.callbacks.sweep_report.rungs) == ["model.d_model"]
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    jobs = expand_jobs(params, [f"+sweep={name}", f"hydra/launcher={launcher}"])
    host = CPU_HOST if not name.endswith("_gpu") else type(CPU_HOST)(launched=None, gpus=1)
    for job in (jobs[0], jobs[-1]):
        config = run_config(compose(job))
        check_run(config, host)
        assert config.train.max_steps and config.train.max_steps > 0


def test_a_size_ruled_job_is_reported_finished_with_its_resolved_batch(tmp_path: Path) -> None:
    """.hydra/config.yaml keeps the budget as given (max_steps null under train.size_rule); the
    report takes the steps and batch the run resolved from model_summary.json's ``train``."""
    from olmo_exp.sweep.report import read_job

    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"train": {"max_steps": None, "max_tokens": None, "global_batch_size": 8,
                              "size_rule": {"tokens_per_param": 2}},
                    "data": {"sequence_length": 128}}, run / ".hydra" / "config.yaml")
    OmegaConf.save(["model.d_model=32"], run / ".hydra" / "overrides.yaml")
    (run / "model_summary.json").write_text(json.dumps({
        "n_params": 1000, "n_non_embedding_params": 500, "flops_per_token": 3000,
        "train": {"max_steps": 5, "max_tokens": 4000, "global_batch_size": 6}}))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/CE loss": 5.0}) + "\n" for s in range(1, 6)))
    data = read_job(run, 0, None)
    assert data.row.status == "finished"
    assert data.row.train_flops == 3000 * 5 * 6 * 128
