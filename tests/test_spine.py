"""The spine end to end: real Wikipedia text, real training, evaluation, generation, run-dir guard.
(Resume: test_crash.py; the dry run: test_lws.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, cli, losses, read_jsonl

from olmo_exp.runtime.generation import one_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, subprocess.CompletedProcess]:
    """12 steps on real text with checkpoints, evaluation and samples at steps 6 and 12."""
    root = tmp_path_factory.mktemp("spine")
    run_dir = root / "run"
    proc = cli(f"data.output_dir={data_dir}", *TINY, "train.max_steps=12",
               "train.global_batch_size=16", "train.micro_batch_size=8",
               "train.checkpoint_interval=6", "train.eval_interval=6", "generate.interval=6",
               f"hydra.run.dir={run_dir}", cwd=root, env={"HYDRA_FULL_ERROR": "1"}, check=True)
    return run_dir, proc


def test_short_run_trains_and_leaves_its_files(short_run) -> None:
    run_dir, proc = short_run
    loss = losses(run_dir)
    assert sorted(loss) == list(range(1, 13))
    last = sum(loss[s] for s in (10, 11, 12)) / 3
    assert last < loss[1] - 1.0, loss  # real text, real learning: the loss clearly falls
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert any("throughput/device/TPS" in r for r in records)
    evals = [r["step"] for r in records if "eval/lm/validation/CE loss" in r]
    assert evals == [6, 12], evals
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step12", "step6"]
    gens = read_jsonl(run_dir / "generations.jsonl")
    assert [g["step"] for g in gens] == [6, 12]
    assert all(g["prompt"] == "The universe is" and g["text"].strip() for g in gens)
    output = (proc.stdout + proc.stderr).splitlines()
    printed = [line.split("[generation step ", 1)[1] for line in output if "[generation step " in line]
    # as saved, on one line each (newlines escaped)
    assert printed == [f"{g['step']}] {one_line('The universe is' + g['text'])}" for g in gens]
    summary = json.loads((run_dir / "model_summary.json").read_text())
    assert [layer["index"] for layer in summary["layers"]] == [0, 1, 2, 3]
    assert summary["n_params"] > summary["n_non_embedding_params"] > 0
    assert summary["flops_per_token"] > 0
    assert (run_dir / ".hydra" / "config.yaml").exists()


def test_run_dir_of_another_model_is_refused(short_run, run_cli) -> None:
    run_dir = short_run[0]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    proc = run_cli(*TINY, "train.max_steps=12", "model.n_layers=2", run_dir=run_dir, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "different run" in errors[0] and "model" in errors[0]
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing touched
