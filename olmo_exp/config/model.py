"""The ``model`` group: an OLMo-2-style transformer, GQA and Layer-Wise Scaling, as olmo-core config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from olmo_exp.base.errors import ConfigError, positive
from olmo_exp.config import lws as lws_lib
from olmo_exp.config import sizing
from olmo_exp.config.lws import LayerSpec, LWSConfig

if TYPE_CHECKING:  # olmo-core only where a model is built: composing and validating stay fast
    from olmo_core.nn.transformer import TransformerConfig

VOCAB_PAD_MULTIPLE = 128  # embedding rows padded for throughput, as olmo-core's presets do


@dataclass
class ModelConfig:
    """Geometry keys are what sweeps range over; block settings follow olmo-core's ``olmo2_*`` builders."""

    name: str = "olmo_tiny"
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None
    """KV heads for GQA; null = n_heads (multi-head attention)."""
    head_dim: int | None = None
    """Fixed across layers; null = d_model / n_heads."""
    hidden_size_multiplier: float | None = None
    """FFN width = multiple_of-rounded int(multiplier * 8/3 * d_model), as olmo-core's llama_like."""
    hidden_size_multiple_of: int = 256
    qk_norm: bool = True
    rope_theta: int = 500_000
    layer_norm_eps: float = 1e-6
    max_sequence_length: int = 4096
    vocab_size: int | None = None
    """Embedding rows; null = the tokenizer's vocab padded to a multiple of 128."""
    tie_word_embeddings: bool = False
    gqa_match: str | None = None
    """n_non_embedding_params or flops_per_token: widen the FFN (solve hidden_size_multiplier)
    so that this GQA/MQA model matches the multi-head model (n_kv_heads = n_heads, default FFN)
    within 1%, as Llama 2's GQA ablation did; null = off."""
    lws: LWSConfig = field(default_factory=LWSConfig)

    @property
    def resolved_n_kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def resolved_head_dim(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    def validate(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "hidden_size_multiple_of",
                    "max_sequence_length", "rope_theta", "layer_norm_eps"):
            positive(f"model.{key}", getattr(self, key))
        positive("model.n_kv_heads", self.n_kv_heads, allow_none=True)
        positive("model.head_dim", self.head_dim, allow_none=True)
        positive("model.hidden_size_multiplier", self.hidden_size_multiplier, allow_none=True)
        positive("model.vocab_size", self.vocab_size, allow_none=True)
        if self.n_heads % self.resolved_n_kv_heads != 0:
            divisors = [k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]
            raise ConfigError(
                "model.n_kv_heads", self.n_kv_heads,
                f"must divide model.n_heads={self.n_heads}; valid: {divisors}",
            )
        if self.head_dim is None and self.d_model % self.n_heads != 0:
            raise ConfigError(
                "model.n_heads", self.n_heads,
                f"must divide model.d_model={self.d_model} when model.head_dim is null "
                "(or set model.head_dim)",
            )
        if self.resolved_head_dim % 2 != 0:
            raise ConfigError("model.head_dim", self.resolved_head_dim, "must be even (RoPE)")
        self.lws.validate()
        # Raises if a layer would get no heads; the unscaled layers' FFN width plays no part in
        # that, so a stand-in for it spares validation olmo-core's import.
        self.layer_specs(ffn_hidden_size=self.hidden_size_multiple_of)

    def layer_specs(self, lws: LWSConfig | None = None, *,
                    ffn_hidden_size: int | None = None) -> list[LayerSpec]:
        """Per-layer geometry under ``lws`` (default: this model's own ``model.lws``);
        ``ffn_hidden_size``: the unscaled layers' FFN width, null = olmo-core's for this model."""
        if ffn_hidden_size is None:
            ffn_hidden_size = sizing.uniform_ffn_hidden_size(self)
        return lws_lib.layer_specs(
            self.lws if lws is None else lws,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.resolved_n_kv_heads,
            head_dim=self.resolved_head_dim,
            ffn_hidden_size=ffn_hidden_size,
        )

    def resolve(self, sequence_length: int) -> None:
        """Solve model.lws.match / model.gqa_match in place (RunConfig.validate calls it)."""
        sizing.resolve_matches(self, sequence_length)

    def padded_vocab_size(self, tokenizer_vocab_size: int) -> int:
        if self.vocab_size is not None:
            return self.vocab_size
        return _round_up(tokenizer_vocab_size, VOCAB_PAD_MULTIPLE)

    def build_config(self, vocab_size: int) -> TransformerConfig:
        """The olmo-core config: the uniform OLMo-2 block plus one override per scaled layer."""
        from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

        config = TransformerConfig.llama_like(
            d_model=self.d_model,
            vocab_size=vocab_size,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            hidden_size_multiplier=self.hidden_size_multiplier,
            hidden_size_multiple_of=self.hidden_size_multiple_of,
            block_name=TransformerBlockType.reordered_norm,
            qk_norm=self.qk_norm,
            rope_theta=self.rope_theta,
            layer_norm_eps=self.layer_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
        )
        assert not isinstance(config.block, dict) and config.block.feed_forward is not None
        ffn = config.block.feed_forward.hidden_size  # olmo-core's width for the unscaled layers
        uniform = self.layer_specs(LWSConfig(), ffn_hidden_size=ffn)[0]
        overrides = lws_lib.block_overrides(config.block, self.layer_specs(ffn_hidden_size=ffn),
                                            uniform)
        config.block_overrides = overrides or None
        return config


def _round_up(n: int, multiple: int) -> int:
    """olmo-core's ``ensure_multiple_of`` (kept here so configs need no olmo-core import)."""
    return multiple * ((n + multiple - 1) // multiple)


