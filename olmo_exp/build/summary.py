"""``model_summary.json`` and the run's header line: the built olmo-core model at the run's sequence
length and sharding, per-layer geometry, and what the dist group's nulls became on this host."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from olmo_exp.config.dist import DistConfig
from olmo_exp.config.model import ModelConfig
from olmo_exp.config.run import RunConfig
from olmo_exp.config.topology import Topology, backend_for

if TYPE_CHECKING:
    from olmo_core.nn.transformer import TransformerConfig



def summarize(cfg: ModelConfig, config: TransformerConfig, *, sequence_length: int,
              shard_degree: int = 1) -> dict:
    """``model_summary.json``: per-layer geometry and parameter counts, totals, FLOPs per token."""
    import torch

    blocks = config.resolved_block_configs
    layers = []
    ffn = config.block.feed_forward.hidden_size  # the built config's: no second build
    for spec, block in zip(cfg.layer_specs(ffn_hidden_size=ffn), blocks, strict=True):
        layers.append({**spec.as_dict(), "params": block.num_params(config.d_model)})
    with torch.device("meta"):
        model = config.build(init_device="meta")
    n_params = config.num_params
    # fp32 weights + grads + AdamW's two moments; sharded by FSDP, replicated otherwise.
    train_state_bytes = 16 * n_params // shard_degree
    kv_per_token = kv_cache_bytes_per_token(layers)
    return {
        "name": cfg.name,
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "vocab_size": config.vocab_size,
        "sequence_length": sequence_length,
        "lws": {k: getattr(cfg.lws, k) for k in ("name", "match", "qkv_scalars", "fnn_scalars",
                                                 "output_scalars", "ffn_multiple_of")},
        "layers": layers,
        "n_params": n_params,
        "n_non_embedding_params": config.num_non_embedding_params,
        "flops_per_token": model.num_flops_per_token(sequence_length),
        "train_state_bytes_per_rank": train_state_bytes,
        # Inference cost: K and V of every layer, bf16 (2 bytes), per token and for one full
        # sequence of ``sequence_length`` tokens (the run's training length).
        "kv_cache_bytes_per_token_bf16": kv_per_token,
        "kv_cache_bytes_per_sequence_bf16": kv_per_token * sequence_length,
        "shard_degree": shard_degree,
    }



BF16_BYTES = 2


def kv_cache_bytes_per_token(layers: list[dict[str, Any]], dtype_bytes: int = BF16_BYTES) -> int:
    """KV-cache bytes one token costs at inference: Σ_layers 2 (K and V) × n_kv_heads × head_dim
    × ``dtype_bytes``, layer by layer (layer-wise scaling gives each layer its own KV heads)."""
    return sum(2 * int(r["n_kv_heads"]) * int(r["head_dim"]) * dtype_bytes for r in layers)


def format_summary(summary: dict) -> str:
    """The per-layer table a user reads before spending GPU hours."""
    head = f"{'layer':>5} {'heads':>5} {'kv':>4} {'hdim':>5} {'ffn':>7} {'scale':>6} {'params':>12}"
    rows = [head, "-" * len(head)]
    for r in summary["layers"]:
        rows.append(
            f"{r['index']:>5} {r['n_heads']:>5} {r['n_kv_heads']:>4} {r['head_dim']:>5} "
            f"{r['ffn_hidden_size']:>7} {r['output_scale']:>6.2f} {r['params']:>12,}"
        )
    gib = summary["train_state_bytes_per_rank"] / 2**30
    rows += [
        "-" * len(head),
        f"params {summary['n_params']:,} (non-embedding {summary['n_non_embedding_params']:,}); "
        f"FLOPs/token {summary['flops_per_token']:,} at seq {summary['sequence_length']}",
        f"memory per rank (fp32 weights+grads+AdamW, shard degree {summary['shard_degree']}): "
        f"{gib:.3f} GiB, plus activations",
    ]
    if "kv_cache_bytes_per_token_bf16" in summary:
        rows.append(f"KV cache (bf16): {summary['kv_cache_bytes_per_token_bf16']:,} B/token, "
                    f"{summary['kv_cache_bytes_per_sequence_bf16'] / 2**20:.2f} MiB per "
                    f"{summary['sequence_length']}-token sequence")
    return "\n".join(rows)


SUMMARY_FILE = "model_summary.json"



def run_summary(cfg: RunConfig, model_config: TransformerConfig, world: Topology) -> dict[str, Any]:
    """model_summary.json: the built model at the run's sequence length and sharding, and ``dist``."""
    return {**summarize(cfg.model, model_config, sequence_length=cfg.data.sequence_length,
                        shard_degree=cfg.dist.param_shard_degree(world.world_size)),
            "dist": resolved_dist(cfg.dist, world),
            # the budget and recipe as validation resolved them (train.size_rule sets them from
            # the model's size; .hydra/config.yaml keeps them as given)
            "train": {k: getattr(cfg.train, k) for k in RESOLVED_TRAIN_KEYS}}


RESOLVED_TRAIN_KEYS = ("max_steps", "max_tokens", "global_batch_size", "micro_batch_size", "lr",
                       "warmup_steps")



def resolved_dist(dist: DistConfig, world: Topology) -> dict[str, Any]:
    """What the dist group's nulls became on this host (model_summary.json's ``dist``)."""
    import torch

    return {
        "strategy": dist.strategy.value,
        "world_size": world.world_size,
        "backend": backend_for(dist, world),
        "precision": dist.precision(world.on_gpu),
        "compile": dist.compile_enabled(world.on_gpu),
        "device": torch.cuda.get_device_name(0) if world.on_gpu else "cpu",
    }



def format_resolved(resolved: dict[str, Any]) -> str:
    """The run's header line: tells runs on different hosts apart at a glance."""
    # backend None = one plain process, no process group: nothing to say (model_summary.json
    # keeps the null).
    return "run: " + " ".join(f"{k}={v}" if k != "device" else f"{k}={v!r}"
                              for k, v in resolved.items() if not (k == "backend" and v is None))
