"""The README.md model card of an export: what the model is (per-layer table, parameters, FLOPs,
KV-cache bytes), what it read, how it scored, and how to load it; from ``model_summary.json`` and
the run's final metrics."""

from __future__ import annotations

from typing import Any

CARD_METRICS = ("train/CE loss", "eval/lm/validation/CE loss", "eval/lm/validation/BPB",
                "eval/lm/validation/PPL")


def model_card(*, name: str, summary: dict[str, Any], metrics: dict[str, float], step: int,
               remote_code: bool, run_dir: str, check: dict[str, float] | None = None) -> str:
    """Markdown; ``metrics``: the run's values at the exported step, ``check``: the export's own."""
    lines = ["---", "library_name: transformers", "tags: [olmo2, olmo-exp"
             + (", layer-wise-scaling]" if remote_code else "]"), "---", "",
             f"# {name}", "",
             f"Exported by olmo-exp from `{run_dir}` at step {step} "
             f"({'remote code: `OlmoLwsForCausalLM`, per-layer widths' if remote_code else 'transformers `Olmo2ForCausalLM`'}).",
             "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             f"model = AutoModelForCausalLM.from_pretrained(DIR{', trust_remote_code=True' if remote_code else ''})",
             "tokenizer = AutoTokenizer.from_pretrained(DIR)", "```", "",
             "| layer | heads | KV heads | head dim | FFN width | output scale | params |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary.get("layers", []):
        lines.append(f"| {row['index']} | {row['n_heads']} | {row['n_kv_heads']} | {row['head_dim']} "
                     f"| {row['ffn_hidden_size']} | {row['output_scale']:g} | {row.get('params', '')} |")
    data = summary.get("data", {})
    lines += ["", f"- parameters: {summary.get('n_params', '?'):,} "
              f"({summary.get('n_non_embedding_params', '?'):,} non-embedding)",
              f"- FLOPs per token (training, sequence length {summary.get('sequence_length')}): "
              f"{summary.get('flops_per_token', '?'):,}",
              f"- KV cache per token (bf16): {summary.get('kv_cache_bytes_per_token_bf16', '?'):,} bytes",
              f"- data: tokenizer `{data.get('tokenizer', '?')}`, token files "
              f"{', '.join(data.get('train_files', [])) or '?'}", "", "| metric | run | export |",
              "|---|---:|---:|"]
    for key in CARD_METRICS:
        if key in metrics:
            mine = (check or {}).get(key)
            lines.append(f"| {key} | {metrics[key]:.6f} | {'' if mine is None else f'{mine:.6f}'} |")
    return "\n".join(lines) + "\n"
