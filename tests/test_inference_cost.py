"""Inference cost in model_summary.json: KV-cache bytes per token (bf16), by hand."""

from __future__ import annotations

from conftest import compose_run

from olmo_exp.build.summary import summarize


def summary_of(*overrides: str, sequence_length: int = 256) -> dict:
    model = compose_run(*overrides).model
    return summarize(model, model.build_config(model.padded_vocab_size(8192)),
                     sequence_length=sequence_length)


def test_kv_cache_bytes_of_a_gqa_model() -> None:
    # gqa_3kv: 12 query heads, 3 KV heads of 384 / 12 = 32 dims, in each of its layers.
    s = summary_of("model=gqa_3kv")
    n_layers = s["n_layers"]
    per_token = n_layers * 2 * 3 * 32 * 2  # layers x (K, V) x KV heads x head_dim x bf16 bytes
    assert s["kv_cache_bytes_per_token_bf16"] == per_token
    assert s["kv_cache_bytes_per_sequence_bf16"] == per_token * 256 == per_token * s["sequence_length"]
    mha = summary_of("model=gqa_3kv", "model.n_kv_heads=12")
    assert mha["kv_cache_bytes_per_token_bf16"] == 4 * per_token  # 12 KV heads instead of 3


def test_kv_cache_bytes_count_per_layer_kv_heads_under_lws() -> None:
    # OpenELM-270M's released per-layer KV heads: 3 x 5, 4 x 7, 5 x 4 = 63 heads of 64 dims.
    s = summary_of("model=openelm_270m", sequence_length=2048)
    assert sorted(layer["n_kv_heads"] for layer in s["layers"]) == [3] * 5 + [4] * 7 + [5] * 4
    assert s["kv_cache_bytes_per_token_bf16"] == 2 * 63 * 64 * 2 == 16_128
    assert s["kv_cache_bytes_per_sequence_bf16"] == 16_128 * 2048
    # The same model with 5 KV heads in every layer (LWS off) would need 20,480 B/token.
    uniform = summary_of("model=openelm_270m", "model/lws=off", sequence_length=2048)
    assert uniform["kv_cache_bytes_per_token_bf16"] == 16 * 2 * 5 * 64 * 2 == 20_480
