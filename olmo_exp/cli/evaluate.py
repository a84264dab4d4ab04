"""``python -m olmo_exp.evaluate RUN_DIR [key=value ...] [--step N] [--device D]``: a checkpoint's
validation loss, perplexity and bits per byte (the run's own validation sequences) and its
``eval.tasks``, without training. Prints a table and writes ``eval-stepN.json`` into the run dir
(the sweep report reads it). Overrides change how the checkpoint is scored (``eval.tasks=[arc_easy]``,
``eval.max_examples=100``, ``train.eval_tokens=65536``), never the model or the data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import write_json_atomic

EVAL_FILE = "eval-step{step}.json"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m olmo_exp.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="train.eval_tokens, train.micro_batch_size, eval.*")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    return parser.parse_args(argv)


def evaluate_run(run_dir: str | Path, overrides: list[str] | None = None, *,
                 step: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Score the checkpoint; returns (and writes) ``{step, overrides, metrics, run_metrics}``."""
    import torch

    from olmo_exp.runtime.offline_eval import evaluate, olmo_logits
    from olmo_exp.runtime.saved_run import load_model, open_run

    run = open_run(run_dir, step, overrides)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(run, device)
    metrics = evaluate(run, olmo_logits(model), device=device)
    logged = {k: v for k in metrics if (v := run.final_metric(k)) is not None}
    record = {"step": run.step, "overrides": list(overrides or []), "device": device,
              "metrics": metrics, "run_metrics": logged}
    write_json_atomic(run.run_dir / EVAL_FILE.format(step=run.step), record)
    return record


def format_table(record: dict[str, Any]) -> str:
    rows = [("metric", "checkpoint", "run (logged)")]
    for key, value in record["metrics"].items():
        logged = record["run_metrics"].get(key)
        rows.append((key, f"{value:.6f}", "" if logged is None else f"{logged:.6f}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>12}  {c:>12}" for a, b, c in rows)


def entry(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        record = evaluate_run(args.run_dir, args.overrides, step=args.step, device=args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"step {record['step']}")
    print(format_table(record))
    print(f"wrote {Path(args.run_dir) / EVAL_FILE.format(step=record['step'])}")
