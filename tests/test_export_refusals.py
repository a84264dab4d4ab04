"""What the export would get wrong is refused in one line, before anything is written; what it
writes for a uniform and for an LWS model (built, not trained: no training here)."""

from __future__ import annotations

import pytest
from conftest import compose_run


def built(*overrides: str):
    """The olmo-core model that a run with these overrides would train (random weights)."""
    config = compose_run(*overrides).model
    return config.build_config(config.padded_vocab_size(8192)).build(init_device="cpu")


@pytest.mark.parametrize("override, key", [
    ("model.qk_norm=false", "model.qk_norm"),
    ("model.tie_word_embeddings=true", "model.tie_word_embeddings"),
])
def test_unexportable_models_are_refused_in_one_line(override: str, key: str) -> None:
    from olmo_exp.build.hf_export import ExportRefused, layers_of

    with pytest.raises(ExportRefused) as err:
        layers_of(built("model.d_model=64", "model.n_heads=4", "model.n_layers=2", override))
    assert err.value.key == key and "\n" not in str(err.value)


def test_uniform_is_native_and_lws_lists_every_layer() -> None:
    from olmo_exp.build.hf_export import hf_config, is_uniform, layers_of

    gqa = built("model=gqa_3kv")
    layers = layers_of(gqa)
    assert is_uniform(layers)
    native = hf_config(gqa, layers, max_position_embeddings=2048, eos_token_id=0, pad_token_id=1)
    assert native.model_type == "olmo2" and native.num_key_value_heads == 3
    assert not hasattr(native, "auto_map")

    lws = built("model=lws_tiny")
    layers = layers_of(lws)
    assert not is_uniform(layers)
    remote = hf_config(lws, layers, max_position_embeddings=2048, eos_token_id=0, pad_token_id=1)
    assert remote.model_type == "olmo_lws" and "AutoModelForCausalLM" in remote.auto_map
    assert remote.layer_num_attention_heads == [8, 12, 12, 16]
    assert remote.layer_num_key_value_heads == [2, 3, 3, 4]
    assert remote.layer_intermediate_sizes == [128, 448, 704, 1024]
    assert remote.layer_attention_residual_alphas == pytest.approx([0.8, 0.93, 1.07, 1.2])
    assert remote.layer_feed_forward_residual_alphas == remote.layer_attention_residual_alphas
