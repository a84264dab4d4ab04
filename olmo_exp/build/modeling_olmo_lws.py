"""OLMo-2 with per-layer widths (Layer-Wise Scaling) for Hugging Face transformers, as remote code.

Shipped verbatim as ``modeling_olmo_lws.py`` in every LWS export (``config.json``'s ``auto_map``;
load with ``trust_remote_code=True``); it imports only torch and transformers. Each layer is
transformers' own OLMo-2 decoder layer, built from a copy of the config carrying that layer's
query heads, KV heads and FFN width; the block adds the two residual-branch scales of olmo-core's
``ReorderedNormTransformerBlock``: ``h = x + a_attn * norm(attn(x))``, ``h + a_ffn * norm(ffn(h))``.
``head_dim`` is one for all layers (RoPE is shared), as in the models olmo-exp trains.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import Olmo2Config
from transformers.models.olmo2.modeling_olmo2 import (
    Olmo2DecoderLayer,
    Olmo2ForCausalLM,
    Olmo2Model,
    Olmo2PreTrainedModel,
    Olmo2RMSNorm,
    Olmo2RotaryEmbedding,
)

PER_LAYER = ("layer_num_attention_heads", "layer_num_key_value_heads", "layer_intermediate_sizes",
             "layer_attention_residual_alphas", "layer_feed_forward_residual_alphas")


class OlmoLwsConfig(Olmo2Config):
    """Olmo2Config plus one list entry per layer for each of :data:`PER_LAYER` and ``head_dim``;
    the global ``num_attention_heads``/``num_key_value_heads``/``intermediate_size`` hold the
    widest layer's values (tools that size buffers from them get an upper bound)."""

    model_type = "olmo_lws"

    def layer_config(self, index: int) -> Olmo2Config:
        """A plain OLMo-2 config with layer ``index``'s widths."""
        layer = copy.copy(self)
        layer.num_attention_heads = self.layer_num_attention_heads[index]
        layer.num_key_value_heads = self.layer_num_key_value_heads[index]
        layer.intermediate_size = self.layer_intermediate_sizes[index]
        return layer


class OlmoLwsDecoderLayer(Olmo2DecoderLayer):
    def __init__(self, config: OlmoLwsConfig, layer_idx: int):
        super().__init__(config.layer_config(layer_idx), layer_idx)
        # The attention reads the attention implementation from its config at run time: the
        # model's own, so that `attn_implementation=...` at load time reaches every layer.
        self.self_attn.config = config
        self.attention_alpha = float(config.layer_attention_residual_alphas[layer_idx])
        self.feed_forward_alpha = float(config.layer_feed_forward_residual_alphas[layer_idx])

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=False, position_embeddings=None,
                **kwargs) -> torch.Tensor:
        attended, _ = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask,
                                     position_ids=position_ids, past_key_values=past_key_values,
                                     use_cache=use_cache, position_embeddings=position_embeddings,
                                     **kwargs)
        # torch.add with alpha, as olmo-core's ResidualStream: the same rounding as the run.
        hidden_states = torch.add(hidden_states, self.post_attention_layernorm(attended),
                                  alpha=self.attention_alpha)
        fed = self.post_feedforward_layernorm(self.mlp(hidden_states))
        return torch.add(hidden_states, fed, alpha=self.feed_forward_alpha)


class OlmoLwsModel(Olmo2Model):
    config_class = OlmoLwsConfig

    def __init__(self, config: OlmoLwsConfig):
        # Olmo2Model's own attributes, with per-layer decoder layers (no uniform layers built first).
        Olmo2PreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [OlmoLwsDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Olmo2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Olmo2RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class OlmoLwsForCausalLM(Olmo2ForCausalLM):
    config_class = OlmoLwsConfig
    _no_split_modules = ["OlmoLwsDecoderLayer"]

    def __init__(self, config: OlmoLwsConfig):
        Olmo2PreTrainedModel.__init__(self, config)
        self.model = OlmoLwsModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
