"""Layer-Wise Scaling (OpenELM, arXiv 2404.14619) as configuration.

Per-layer attention widths, FFN widths and residual output scales become one olmo-core
``TransformerBlockConfig`` per layer (``TransformerConfig.block_overrides``); no new modules.

The math follows apple/corenet (``GPTConfig.__post_init__`` in
``corenet/modeling/models/language_modeling/general_gpt.py``, ``make_divisible`` in
``corenet/utils/math_utils.py``) and the HF ``apple/OpenELM-*`` ``configuration_openelm.py``;
with it the four released models' per-layer ``num_query_heads``/``num_kv_heads`` (their
``config.json``) and FFN widths are reproduced exactly (pinned in ``tests/test_lws.py``).

Schedules: each ``[a, b]`` goes linearly from layer 0 (``a``) to layer N-1 (``b``). Decreasing
schedules (``a > b``, e.g. wide-then-narrow attention) are allowed on purpose, for sweeps;
OpenELM itself only uses increasing ones. ``a == b`` gives every layer the same width.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from olmo_exp.base.errors import ConfigError, positive

if TYPE_CHECKING:  # annotations only: composing and validating never import olmo-core
    from olmo_core.nn.transformer import TransformerBlockConfig

SCALAR_KEYS = ("qkv_scalars", "fnn_scalars", "output_scalars")


@dataclass
class LWSConfig:
    """``model.lws``: [first-layer, last-layer] scalars; null = uniform (no scaling)."""

    name: str = "off"
    qkv_scalars: list[float] | None = None
    """Attention (query) width as a scalar of d_model, linearly from layer 0 to layer N-1."""
    fnn_scalars: list[float] | None = None
    """FFN hidden width as a scalar of d_model."""
    output_scalars: list[float] | None = None
    """Scalar on each block's attention and FFN outputs (the residual branches)."""
    ffn_multiple_of: int = 256
    """FFN widths are rounded to a multiple of this (OpenELM's ffn_dim_divisor)."""
    match: str | None = None
    """n_non_embedding_params or flops_per_token: solve fnn_scalars[1] at compose time so that
    this model's layers match the uniform model of the same d_model/n_layers/heads within 1%
    (olmo_exp/config/sizing.py); null = the scalars as given."""

    @property
    def enabled(self) -> bool:
        return any(getattr(self, k) is not None for k in SCALAR_KEYS)

    def validate(self) -> None:
        positive("model.lws.ffn_multiple_of", self.ffn_multiple_of)
        for key in SCALAR_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            value = list(value)
            ok = len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value
            )
            if not ok:
                raise ConfigError(
                    f"model.lws.{key}",
                    value,
                    "must be [first_layer, last_layer], two positive numbers (e.g. [0.5, 1.0]), "
                    "or null",
                )
            # Decreasing schedules are allowed (see the module docstring); OpenELM's increase.


@dataclass(frozen=True)
class LayerSpec:
    """The geometry of one transformer block (one row of ``model_summary.json``)."""

    index: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    output_scale: float
    """This layer's output scalar: olmo-core's attention/feed_forward ``residual_alpha``."""

    def as_dict(self) -> dict:
        return asdict(self)


def make_divisible(v: float, divisor: int) -> int:
    """OpenELM's rounding: nearest multiple of ``divisor``, at least ``divisor``, never < 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def layer_scalars(bounds: list[float] | None, n_layers: int) -> list[float] | None:
    """``round(v, 2)`` of a linspace from the first to the last layer (exactly as OpenELM).

    OpenELM calls ``round`` on numpy float64s, i.e. numpy's rounding (scale by 100, round half
    to even), which differs from Python's ``round(float)`` on near-ties: the linspace value
    2.775 (stored as 2.77499...) is 2.78 for numpy but 2.77 for Python (e.g. 21 layers,
    0.5 -> 4.0, layer 13). ``np.round`` keeps us on OpenELM's side of such ties.
    """
    if bounds is None:
        return None
    import numpy as np  # here, not at the top: `--help` and `--cfg job` never need it

    values = np.linspace(float(bounds[0]), float(bounds[1]), num=n_layers, dtype=float)
    return [float(v) for v in np.round(values, 2)]


def layer_specs(
    lws: LWSConfig,
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    ffn_hidden_size: int,
) -> list[LayerSpec]:
    """The per-layer geometry; with every scalar null it is the uniform model."""
    group = n_heads // n_kv_heads  # query heads per KV head, kept in every layer
    qkv = layer_scalars(lws.qkv_scalars, n_layers)
    ffn = layer_scalars(lws.fnn_scalars, n_layers)
    out = layer_scalars(lws.output_scalars, n_layers)
    specs = []
    for i in range(n_layers):
        heads_i, kv_i = n_heads, n_kv_heads
        if qkv is not None:
            q_dim = make_divisible(d_model * qkv[i], head_dim * group)
            heads_i = q_dim // head_dim
            kv_i = heads_i // group
        ffn_i = ffn_hidden_size
        if ffn is not None:
            ffn_i = make_divisible(ffn[i] * d_model, lws.ffn_multiple_of)
        # make_divisible never returns less than its divisor, so a scaled layer keeps at least
        # g query heads and one KV head, and one ffn_multiple_of of FFN width (OpenELM's floor);
        # these guards only catch a future change to that rounding.
        if heads_i <= 0 or kv_i <= 0:
            raise ConfigError(
                "model.lws.qkv_scalars",
                lws.qkv_scalars,
                f"layer {i} would get {heads_i} heads; raise the smaller scalar",
            )
        if ffn_i <= 0:
            raise ConfigError(
                "model.lws.fnn_scalars",
                lws.fnn_scalars,
                f"layer {i} would get FFN width {ffn_i}; raise the smaller scalar",
            )
        specs.append(
            LayerSpec(
                index=i,
                n_heads=heads_i,
                n_kv_heads=kv_i,
                head_dim=head_dim,
                ffn_hidden_size=ffn_i,
                output_scale=1.0 if out is None else out[i],
            )
        )
    return specs


def block_overrides(
    base: TransformerBlockConfig, specs: list[LayerSpec], uniform: LayerSpec
) -> dict[int, TransformerBlockConfig]:
    """One olmo-core block config for each layer whose geometry differs from ``uniform`` (= base)."""
    overrides = {}
    for spec in specs:
        if replace(spec, index=uniform.index) == uniform:
            continue
        block = deepcopy(base)
        attn = block.sequence_mixer
        attn.n_heads, attn.n_kv_heads, attn.head_dim = spec.n_heads, spec.n_kv_heads, spec.head_dim
        assert block.feed_forward is not None
        block.feed_forward.hidden_size = spec.ffn_hidden_size
        if spec.output_scale != 1.0:
            block.attention_residual_alpha = spec.output_scale
            block.feed_forward_residual_alpha = spec.output_scale
        overrides[spec.index] = block
    return overrides
