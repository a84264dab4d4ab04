"""The sweep report picks up ``eval-stepN.json`` (``python -m olmo_exp.evaluate``), the latest step's."""

from __future__ import annotations

import json
from pathlib import Path

from olmo_exp.sweep.report import read_job


def test_report_reads_the_latest_evaluate_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps(
        {"step": 4, "train/CE loss": 7.0, "eval/lm/validation/CE loss": 6.5}) + "\n")
    for step, acc in ((2, 0.25), (4, 0.5)):
        (run_dir / f"eval-step{step}.json").write_text(json.dumps(
            {"step": step, "metrics": {"eval/downstream/arc_easy (accuracy)": acc}}))
    extra = read_job(run_dir, 0, []).extra
    assert extra["evaluate/step"] == 4
    assert extra["evaluate/eval/downstream/arc_easy (accuracy)"] == 0.5
