"""An olmo-core OLMo-2 model -> a Hugging Face transformers directory.

Uniform and GQA models become transformers' own ``Olmo2ForCausalLM`` (no remote code: every HF tool
and vLLM load them). Models whose layers differ (Layer-Wise Scaling: per-layer heads, KV heads,
FFN widths, residual scales) become ``OlmoLwsForCausalLM``, the remote code in
:mod:`olmo_exp.build.modeling_olmo_lws`, copied into the directory. Weights are renamed by
olmo-core's own converter (``olmo_core.nn.hf``); the geometry is read from the built model's
modules, layer by layer (olmo-core's ``get_hf_config`` reads the first block only).
Anything the two classes can't reproduce exactly is refused with one line (:class:`ExportRefused`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError
from olmo_exp.build import modeling_olmo_lws

if TYPE_CHECKING:
    import torch
    from olmo_core.nn.transformer import Transformer
    from transformers import PretrainedConfig, PreTrainedModel

REMOTE_CODE_FILE = "modeling_olmo_lws.py"


class ExportRefused(ConfigError):
    """The model has something the exported classes would not reproduce."""


@dataclass(frozen=True)
class Layer:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    attention_alpha: float
    feed_forward_alpha: float


def layers_of(model: Transformer) -> list[Layer]:
    """Each block's geometry, read from the built modules; refuses blocks HF OLMo-2 can't express."""
    from olmo_core.nn.attention import Attention
    from olmo_core.nn.transformer.block import ReorderedNormTransformerBlock

    if getattr(model, "embedding_norm", None) is not None:
        raise ExportRefused("model", "embedding_norm", "HF OLMo-2 has no embedding norm")
    if model.tie_word_embeddings:
        raise ExportRefused("model.tie_word_embeddings", True,
                            "tied embeddings are not exported; train with false")
    found = []
    for index, block in model.blocks.items():
        att = block.attention
        where = f"blocks.{index}"
        if type(block) is not ReorderedNormTransformerBlock or not isinstance(att, Attention):
            raise ExportRefused(where, type(block).__name__,
                                "only OLMo-2 blocks (reordered norm, attention) are exported")
        if att.q_norm is None or att.k_norm is None or att.use_head_qk_norm:
            raise ExportRefused("model.qk_norm", att.q_norm is not None,
                                "HF OLMo-2 needs QK norm over all heads (model.qk_norm=true)")
        if att.rope is None or att.rope.scaling is not None:
            raise ExportRefused(where, "rope", "needs unscaled RoPE")
        if att.clip_qkv is not None or att.w_q.bias is not None or att.w_out.bias is not None:
            raise ExportRefused(where, "attention", "clip_qkv and biases are not exported")
        if att.backend is not None and att.backend.window_size != (-1, -1):
            raise ExportRefused(where, "sliding window", "OLMo-2 attends over the full context")
        found.append(Layer(att.n_heads, att.n_kv_heads, att.head_dim, block.feed_forward.hidden_size,
                           float(block.attention_residual_stream.alpha),
                           float(block.feed_forward_residual_stream.alpha)))
    if len({layer.head_dim for layer in found}) != 1:
        raise ExportRefused("model.head_dim", sorted({layer.head_dim for layer in found}),
                            "layers must share one head_dim (RoPE is shared)")
    return found


def is_uniform(layers: list[Layer]) -> bool:
    """Every layer the same and no residual scaling: transformers' own Olmo2ForCausalLM."""
    first = layers[0]
    return all(layer == first for layer in layers) and \
        first.attention_alpha == first.feed_forward_alpha == 1.0


def hf_config(model: Transformer, layers: list[Layer], *, max_position_embeddings: int,
              eos_token_id: int, pad_token_id: int) -> PretrainedConfig:
    from transformers import Olmo2Config

    att = model.blocks["0"].attention
    widest = max(layers, key=lambda layer: layer.n_heads)
    common: dict[str, Any] = dict(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=model.n_layers,
        num_attention_heads=widest.n_heads, num_key_value_heads=widest.n_kv_heads,
        intermediate_size=max(layer.ffn_hidden_size for layer in layers),
        head_dim=layers[0].head_dim, hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(att.rope.theta)},
        rms_norm_eps=model.blocks["0"].feed_forward_norm.eps, attention_bias=False,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, dtype="float32",
    )
    if is_uniform(layers):
        config = Olmo2Config(**common)
        config.architectures = ["Olmo2ForCausalLM"]
        return config
    config = modeling_olmo_lws.OlmoLwsConfig(
        **common,
        layer_num_attention_heads=[layer.n_heads for layer in layers],
        layer_num_key_value_heads=[layer.n_kv_heads for layer in layers],
        layer_intermediate_sizes=[layer.ffn_hidden_size for layer in layers],
        layer_attention_residual_alphas=[layer.attention_alpha for layer in layers],
        layer_feed_forward_residual_alphas=[layer.feed_forward_alpha for layer in layers],
    )
    module = Path(REMOTE_CODE_FILE).stem
    config.architectures = ["OlmoLwsForCausalLM"]
    config.auto_map = {"AutoConfig": f"{module}.OlmoLwsConfig",
                       "AutoModelForCausalLM": f"{module}.OlmoLwsForCausalLM"}
    return config


def hf_state(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """An olmo-core model state under HF OLMo-2 names (olmo-core's converter: renames only)."""
    from olmo_core.nn.conversion.state_mapping import TemplatePlaceholder
    from olmo_core.nn.hf import get_converter_to_hf

    state = {k: v.detach().clone() for k, v in state.items()}
    return get_converter_to_hf("olmo2").convert(state, {TemplatePlaceholder.LAYER: n_layers})


def hf_model(config: PretrainedConfig, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """The transformers model with exactly these weights: every tensor used, none missing."""
    from transformers import Olmo2ForCausalLM

    cls = Olmo2ForCausalLM if config.model_type == "olmo2" else modeling_olmo_lws.OlmoLwsForCausalLM
    model = cls(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that the config doesn't give
        raise ExportRefused("model", cls.__name__, f"weights don't fit the config: "
                            f"{str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ExportRefused("model", cls.__name__,
                            f"weights don't map one to one (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    return model.eval()


def export_model(model: Transformer, out: Path, *, max_position_embeddings: int,
                 tokenizer_file: Path, eos_token_id: int, pad_token_id: int) -> PreTrainedModel:
    """Write config.json, model.safetensors, generation_config.json, the tokenizer and (LWS) the
    remote code into ``out`` (which must be new or empty); returns the HF model."""
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    layers = layers_of(model)
    config = hf_config(model, layers, max_position_embeddings=max_position_embeddings,
                       eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    exported = hf_model(config, hf_state(model.state_dict(), model.n_layers))
    exported.generation_config = GenerationConfig(
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, do_sample=False)
    out.mkdir(parents=True, exist_ok=True)
    exported.save_pretrained(out)
    if config.model_type != "olmo2":
        shutil.copyfile(modeling_olmo_lws.__file__, out / REMOTE_CODE_FILE)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    tok.eos_token = tok.convert_ids_to_tokens(eos_token_id)
    tok.pad_token = tok.convert_ids_to_tokens(pad_token_id)
    tok.model_max_length = max_position_embeddings
    tok.save_pretrained(out)
    return exported
