"""A model's size from its config alone (no olmo-core, no torch): parameters and training FLOPs per
token of its transformer layers, and the per-rung match that keeps a ladder's arms fair.

The counts follow olmo-core exactly (``tests/test_sizing.py`` checks them against built models):
an OLMo-2 block (``reordered_norm``) has q/k/v/out projections without bias, QK norms over the
full query and key widths, a SwiGLU FFN (three ``d_model x hidden`` matrices) and two block norms;
its FLOPs per token are 6 per attention/FFN parameter (block norms not counted) plus
``12 x n_heads x head_dim x (causal (query, key) pairs) // seq_len`` (olmo-core's
``Attention.num_flops_per_token``).

"Layer parameters" here are the blocks' (Kaplan et al. 2020's non-embedding N, ~12 x n_layers x
d_model^2): the embedding and the LM head are the same for every arm of a ladder and would, at
CPU sizes with an 8,192-token vocabulary, outweigh the layers themselves.

Matching (``model.lws.match``, ``model.gqa_match``): the model's metric must be within
``MATCH_TOLERANCE`` of its reference -- for LWS the uniform model of the same d_model, n_layers and
heads; for GQA/MQA the multi-head model (n_kv_heads = n_heads) with the default FFN. The metric is
solved on the layers alone, which differ; model_summary.json's totals add the same embedding and
LM head to both sides, so they match at least as closely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import ceil
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError, positive
from olmo_exp.config import lws as lws_lib

if TYPE_CHECKING:
    from olmo_exp.config.model import ModelConfig

MATCH_METRICS = ("n_non_embedding_params", "flops_per_token")
"""What a match keeps equal (model_summary.json's keys of the same names)."""
MATCH_TOLERANCE = 0.01
FNN_TOP_GRID = (0.01, 64.0, 0.01)
"""The LWS knob's search range and step: model.lws.fnn_scalars[1] (OpenELM: 4.0)."""
FFN_MULTIPLIER_GRID = (0.25, 16.0, 0.001)
"""The GQA knob's: model.hidden_size_multiplier (FFN width over the default 8/3 x d_model)."""


def ensure_multiple_of(n: int, multiple: int) -> int:
    """olmo-core's rounding of FFN widths (up to a multiple)."""
    return multiple * ((n + multiple - 1) // multiple)


def uniform_ffn_hidden_size(model: ModelConfig) -> int:
    """The unscaled layers' FFN width, as olmo-core's ``TransformerConfig.llama_like`` makes it."""
    hidden = int(8 * model.d_model / 3)
    if model.hidden_size_multiplier is not None:
        hidden = int(model.hidden_size_multiplier * hidden)
    return ensure_multiple_of(hidden, model.hidden_size_multiple_of)


def specs(model: ModelConfig, lws: lws_lib.LWSConfig | None = None) -> list[lws_lib.LayerSpec]:
    return model.layer_specs(lws, ffn_hidden_size=uniform_ffn_hidden_size(model))


def _attention_params(d_model: int, spec: lws_lib.LayerSpec, qk_norm: bool) -> int:
    q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    return 2 * d_model * q + 2 * d_model * kv + (q + kv if qk_norm else 0)


def layer_params(model: ModelConfig, layers: list[lws_lib.LayerSpec] | None = None) -> int:
    """Parameters of the transformer blocks (attention + FFN + the two block norms)."""
    d = model.d_model
    return sum(_attention_params(d, s, model.qk_norm) + 3 * d * s.ffn_hidden_size + 2 * d
               for s in (specs(model) if layers is None else layers))


def layer_flops_per_token(model: ModelConfig, sequence_length: int,
                          layers: list[lws_lib.LayerSpec] | None = None) -> int:
    """Training FLOPs per token of the blocks (olmo-core's count; the LM head's comes on top)."""
    d, s_len = model.d_model, sequence_length
    pairs = s_len * (s_len + 1) // 2  # causal (query, key) pairs
    return sum(6 * (_attention_params(d, s, model.qk_norm) + 3 * d * s.ffn_hidden_size)
               + 12 * s.n_heads * s.head_dim * pairs // s_len
               for s in (specs(model) if layers is None else layers))


def layer_metric(model: ModelConfig, metric: str, sequence_length: int,
                 layers: list[lws_lib.LayerSpec] | None = None) -> int:
    if metric == "flops_per_token":
        return layer_flops_per_token(model, sequence_length, layers)
    return layer_params(model, layers)


def resolve_matches(model: ModelConfig, sequence_length: int) -> None:
    """Solve ``model.lws.match`` / ``model.gqa_match`` in place (idempotent: the reference never
    depends on the solved knob). One ConfigError where no knob value comes within tolerance."""
    lws_match, gqa_match = model.lws.match, model.gqa_match
    for key, value in (("model.lws.match", lws_match), ("model.gqa_match", gqa_match)):
        if value is not None and value not in MATCH_METRICS:
            raise ConfigError(key, value, f"must be null or one of {', '.join(MATCH_METRICS)}")
    if lws_match is not None and gqa_match is not None:
        raise ConfigError("model.gqa_match", gqa_match,
                          "must be null with model.lws.match set (match one thing at a time)")
    if lws_match is not None:
        _match_lws(model, lws_match, sequence_length)
    elif gqa_match is not None:
        _match_gqa(model, gqa_match, sequence_length)


def _match_lws(model: ModelConfig, metric: str, sequence_length: int) -> None:
    lws = model.lws
    if lws.fnn_scalars is None:
        raise ConfigError("model.lws.match", metric,
                          "needs model.lws.fnn_scalars (its last value is what gets solved); "
                          "e.g. model/lws=openelm_matched, or model.lws.match=null")
    target = layer_metric(model, metric, sequence_length, specs(model, lws_lib.LWSConfig()))
    first = float(lws.fnn_scalars[0])

    def value(top: float) -> int:
        trial = replace(lws, fnn_scalars=[first, top])
        return layer_metric(model, metric, sequence_length, specs(model, trial))

    top, got = _solve(value, target, FNN_TOP_GRID)
    _check(f"model.lws.match={metric}", target, got, top, "model.lws.fnn_scalars[1]",
           f"lower model.lws.ffn_multiple_of={lws.ffn_multiple_of} or change "
           f"model.lws.fnn_scalars[0]={first}")
    lws.fnn_scalars = [first, top]


def _match_gqa(model: ModelConfig, metric: str, sequence_length: int) -> None:
    if model.lws.enabled:
        raise ConfigError("model.gqa_match", model.gqa_match,
                          "is for uniform models; with layer-wise scaling use model.lws.match")
    reference = replace(model, n_kv_heads=None, hidden_size_multiplier=None)
    target = layer_metric(reference, metric, sequence_length)

    def value(multiplier: float) -> int:
        return layer_metric(replace(model, hidden_size_multiplier=multiplier), metric,
                            sequence_length)

    if model.resolved_n_kv_heads == model.n_heads:  # the reference itself: the default FFN
        model.hidden_size_multiplier = None
        return
    multiplier, got = _solve(value, target, FFN_MULTIPLIER_GRID)
    _check(f"model.gqa_match={metric}", target, got, multiplier, "model.hidden_size_multiplier",
           f"lower model.hidden_size_multiple_of={model.hidden_size_multiple_of}")
    model.hidden_size_multiplier = multiplier


def _solve(value, target: int, grid: tuple[float, float, float]) -> tuple[float, int]:
    """The grid point whose (non-decreasing) ``value`` is closest to ``target``: a bisection for
    the first point at or above it, then the better of it and its lower neighbour."""
    low, high, step = grid
    n = int(round((high - low) / step))

    def at(i: int) -> float:
        return round(low + i * step, 6)

    lo, hi = 0, n
    if value(at(hi)) < target:
        lo = hi
    else:
        while lo < hi:  # first index with value >= target
            mid = (lo + hi) // 2
            if value(at(mid)) >= target:
                hi = mid
            else:
                lo = mid + 1
    candidates = [(abs(value(at(i)) - target), i) for i in {max(lo - 1, 0), lo}]
    _, best = min(candidates)
    return at(best), value(at(best))


def _check(what: str, target: int, got: int, knob: float, knob_key: str, fix: str) -> None:
    diff = got / target - 1.0
    if abs(diff) > MATCH_TOLERANCE:
        key, value = what.split("=")
        raise ConfigError(
            key, value,
            f"no {knob_key} brings the layers within {MATCH_TOLERANCE:.0%} of the reference's "
            f"{target:,} (closest: {got:,}, {diff:+.2%}, at {knob}); {fix}")


@dataclass
class SizeRuleConfig:
    """``train.size_rule``: a rung's token budget and recipe from its size N = layer parameters
    (:func:`layer_params`). Every key null = off (the train group's own max_steps/lr/batch)."""

    tokens_per_param: float | None = None
    """train.max_tokens = tokens_per_param x N (Chinchilla's compute-optimal ratio is ~20);
    needs train.max_steps=null."""
    reference_params: int | None = None
    """N0, the size ``lr`` and ``batch_size`` were calibrated at (the smallest rung); null = off."""
    lr: float | None = None
    """The calibrated peak LR at N0: train.lr = lr x (N / N0)^lr_exponent."""
    lr_exponent: float = -1 / 3
    """olmo-core's model ladder: LR proportional to N^(-1/3)."""
    batch_size: int | None = None
    """Sequences per step at N0: train.global_batch_size = round(batch_size x (N/N0)^batch_exponent)."""
    batch_exponent: float = 0.0
    """olmo-core's model ladder uses 2/3 (batch in tokens ~ N^(2/3)); 0 = one batch size for all."""
    batch_multiple: int = 1
    """The scaled batch is rounded to a multiple of this (micro-batch x ranks: no ragged step)."""
    warmup_tokens_per_param: float | None = None
    """train.warmup_steps from N: warmup over this x N tokens (olmo-core's ladder: 1); null =
    train.warmup_steps as given."""
    flops_budget: float | None = None
    """isoFLOP runs: train.max_tokens = flops_budget / model_summary.json's flops_per_token (the
    whole model's, LM head included); instead of tokens_per_param."""

    def validate(self) -> None:
        positive("train.size_rule.tokens_per_param", self.tokens_per_param, allow_none=True)
        positive("train.size_rule.flops_budget", self.flops_budget, allow_none=True)
        positive("train.size_rule.batch_multiple", self.batch_multiple)
        positive("train.size_rule.warmup_tokens_per_param", self.warmup_tokens_per_param,
                 allow_none=True)
        if self.flops_budget is not None and self.tokens_per_param is not None:
            raise ConfigError("train.size_rule.flops_budget", self.flops_budget,
                              "give one of it and train.size_rule.tokens_per_param "
                              f"({self.tokens_per_param}); add train.size_rule.tokens_per_param=null")
        positive("train.size_rule.reference_params", self.reference_params, allow_none=True)
        if self.reference_params is not None:
            for key in ("lr", "batch_size"):
                positive(f"train.size_rule.{key}", getattr(self, key))


def flops_per_token(model: ModelConfig, sequence_length: int, vocab_size: int) -> int:
    """model_summary.json's flops_per_token: the layers' plus the LM head's (norm + output
    matrix, 6 FLOPs per parameter); ``vocab_size`` = the padded embedding rows."""
    return layer_flops_per_token(model, sequence_length) + 6 * (vocab_size + 1) * model.d_model


def apply_size_rule(rule: SizeRuleConfig, train: Any, model: ModelConfig, sequence_length: int,
                    tokenizer_vocab: int | None = None) -> None:
    """Set train.max_tokens, lr and global_batch_size from the rule (in place; idempotent: they
    are computed from the rule's own values, never from the train keys they replace).
    ``tokenizer_vocab``: the tokenizer's vocab, which a FLOPs budget needs (the LM head's share)."""
    rule.validate()
    n_params = layer_params(model)
    if rule.tokens_per_param is not None:
        train.max_tokens = ceil(rule.tokens_per_param * n_params)
    if rule.flops_budget is not None:
        vocab = model.vocab_size if tokenizer_vocab is None else model.padded_vocab_size(
            tokenizer_vocab)
        if vocab is None:
            raise ConfigError("train.size_rule.flops_budget", rule.flops_budget,
                              "needs the vocab size: set model.vocab_size or validate through "
                              "olmo_exp.data.check.check_run (which reads the tokenizer)")
        train.max_tokens = int(rule.flops_budget // flops_per_token(model, sequence_length, vocab))
        if train.max_tokens < 1:
            raise ConfigError("train.size_rule.flops_budget", rule.flops_budget,
                              "is less than one token of this model; raise it")
    if rule.reference_params is not None:
        ratio = n_params / rule.reference_params
        train.lr = float(rule.lr) * ratio ** rule.lr_exponent
        multiple = rule.batch_multiple
        train.global_batch_size = multiple * max(
            1, round(rule.batch_size * ratio ** rule.batch_exponent / multiple))
    if rule.warmup_tokens_per_param is not None:
        train.warmup_steps = ceil(rule.warmup_tokens_per_param * n_params
                                  / (train.global_batch_size * sequence_length))
