"""A model's size from its config (olmo_exp/config/sizing.py): the counts agree with olmo-core's
built models, per-rung matching lands within 1% at many sizes (or says why not, in one line),
and a rung's budget, LR and batch follow its size (train.size_rule)."""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import replace

import pytest
from conftest import CPU_HOST, assert_one_line_error, compose_run

from olmo_exp.config import sizing
from olmo_exp.data.check import check_run

SEQ = 128
VOCAB = 1024


def _olmo_core_counts(model, sequence_length: int = SEQ) -> tuple[int, int]:
    """(block parameters, block FLOPs per token) of the olmo-core model (meta device)."""
    import torch

    logging.getLogger("olmo_core").setLevel(logging.WARNING)
    config = model.build_config(VOCAB)
    with torch.device("meta"):
        built = config.build(init_device="meta")
    blocks = list(built.blocks.values())
    params = sum(p.numel() for b in blocks for p in b.parameters())
    return params, sum(b.num_flops_per_token(sequence_length) for b in blocks)


@pytest.mark.parametrize("overrides", [
    ("model=ladder",),
    ("model=ladder", "model.d_model=48", "model/lws=openelm_matched"),
    ("model=ladder", "model.d_model=64", "model.n_kv_heads=2", "model.gqa_match=flops_per_token"),
    ("model=lws_tiny",),                     # output scales, GQA in LWS layers
    ("model=gqa_3kv", "model.qk_norm=false"),
    ("model=openelm_270m",),                 # the released geometry, 16 heterogeneous layers
])
def test_counts_are_olmo_cores(overrides: tuple[str, ...]) -> None:
    config = compose_run(*overrides, f"data.sequence_length={SEQ}")
    config.model.resolve(SEQ)
    params, flops = _olmo_core_counts(config.model)
    assert sizing.layer_params(config.model) == params
    assert sizing.layer_flops_per_token(config.model, SEQ) == flops


def test_flops_per_token_is_model_summarys() -> None:
    from olmo_exp.build.summary import summarize

    model = compose_run("model=ladder", "model.d_model=40", "model/lws=openelm_matched").model
    model.resolve(SEQ)
    summary = summarize(model, model.build_config(VOCAB), sequence_length=SEQ)
    assert sizing.flops_per_token(model, SEQ, VOCAB) == summary["flops_per_token"]


@functools.cache
def _ladder(*overrides: str):
    return compose_run("model=ladder", *overrides).model


def ladder(*overrides: str, **fields):
    """model=ladder (composed once per set of overrides) with these fields replaced; n_heads
    follows d_model as the model file's interpolation makes it."""
    model = copy.deepcopy(_ladder(*overrides))
    if "d_model" in fields:
        fields.setdefault("n_heads", fields["d_model"] // (fields.get("head_dim") or model.head_dim))
    return replace(model, **fields)


LADDER_SIZES = [(d, n) for d in (24, 32, 40, 48, 64, 96, 128, 192, 256) for n in (3, 4, 6, 8)]


@pytest.mark.parametrize("metric", sizing.MATCH_METRICS)
def test_lws_matches_the_uniform_model_at_many_sizes(metric: str) -> None:
    """model.lws.match solves the last FFN scalar per rung: within 1% wherever it answers, and
    it answers at (nearly) every size of the ladder model; the knob really moves with the size."""
    solved, tops = 0, set()
    for d_model, n_layers in LADDER_SIZES:
        lws = ladder("model/lws=openelm_matched", f"model.lws.match={metric}",
                     d_model=d_model, n_layers=n_layers)
        uniform = ladder(d_model=d_model, n_layers=n_layers)
        try:
            lws.resolve(SEQ)
        except Exception as e:  # noqa: BLE001 - a size with no solution must say so in one line
            assert "\n" not in str(e) and str(e).startswith("model.lws.match="), e
            continue
        solved += 1
        tops.add(lws.lws.fnn_scalars[1])
        ours = sizing.layer_metric(lws, metric, SEQ)
        reference = sizing.layer_metric(uniform, metric, SEQ)
        assert abs(ours / reference - 1) <= sizing.MATCH_TOLERANCE, (d_model, n_layers)
        assert lws.lws.fnn_scalars[0] == 0.5  # only the free scalar moves
    assert solved >= len(LADDER_SIZES) - 2
    assert len(tops) > 5


def test_gpu_sized_lws_match_holds_on_olmo_cores_own_count() -> None:
    """At the GPU ladder's top rung, the built olmo-core model (model_summary.json's numbers) matches."""
    overrides = ("model=ladder", "model.d_model=1280", "model.n_layers=20", "model.head_dim=64",
                 "model.hidden_size_multiple_of=128", "model.lws.ffn_multiple_of=128")
    uniform = compose_run(*overrides).model
    lws = compose_run(*overrides, "model/lws=openelm_matched").model
    lws.resolve(2048)
    assert lws.lws.fnn_scalars[1] != 4.0
    (p_u, _), (p_l, _) = _olmo_core_counts(uniform, 2048), _olmo_core_counts(lws, 2048)
    assert abs(p_l / p_u - 1) <= sizing.MATCH_TOLERANCE


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_gqa_match_widens_the_ffn_to_mha(n_kv_heads: int) -> None:
    for d_model, n_layers in [(64, 3), (128, 4), (256, 6), (1024, 16)]:
        common = dict(d_model=d_model, n_layers=n_layers, head_dim=8)
        mha = ladder(**common)
        gqa = ladder(**common, n_kv_heads=n_kv_heads, gqa_match="n_non_embedding_params")
        unmatched = ladder(**common, n_kv_heads=n_kv_heads)
        gqa.resolve(SEQ)
        assert gqa.hidden_size_multiplier is not None and gqa.hidden_size_multiplier > 1
        assert sizing.uniform_ffn_hidden_size(gqa) > sizing.uniform_ffn_hidden_size(mha)
        assert abs(sizing.layer_params(gqa) / sizing.layer_params(mha) - 1) <= 0.01
        assert sizing.layer_params(unmatched) < 0.99 * sizing.layer_params(mha)  # it did need it


def test_matching_is_idempotent_and_off_by_default() -> None:
    model = compose_run("model=ladder", "model.d_model=64", "model/lws=openelm_matched").model
    model.resolve(SEQ)
    first = list(model.lws.fnn_scalars)
    model.resolve(SEQ)
    assert model.lws.fnn_scalars == first
    plain = compose_run("model=ladder", "model.d_model=64", "model/lws=openelm_exact").model
    plain.resolve(SEQ)
    assert plain.lws.fnn_scalars == [0.5, 4.0] and plain.lws.match is None


@pytest.mark.parametrize(("overrides", "key"), [
    # d_model 16: one head per layer whatever the schedule, FFN widths too coarse for 1%
    (("model=ladder", "model.d_model=16", "model/lws=openelm_matched"), "model.lws.match"),
    (("model=ladder", "model/lws=openelm_matched", "model.lws.match=params"), "model.lws.match"),
    (("model=ladder", "model.lws.match=n_non_embedding_params"), "model.lws.match"),
    (("model=ladder", "model.d_model=32", "model.n_kv_heads=2", "model.gqa_match=flops"),
     "model.gqa_match"),
    (("model=ladder", "model/lws=openelm_matched", "model.gqa_match=flops_per_token"),
     "model.gqa_match"),
    (("model=ladder", "train.size_rule.tokens_per_param=20"), "train.max_tokens"),
    (("model=ladder", "train=ladder", "train.size_rule.flops_budget=1e12"),
     "train.size_rule.flops_budget"),
    (("model=ladder", "train=ladder", "train.size_rule.reference_params=0"),
     "train.size_rule.reference_params"),
])
def test_no_solution_or_bad_rule_is_one_line(overrides: tuple[str, ...], key: str) -> None:
    assert_one_line_error(overrides, key)


def test_size_rule_sets_budget_lr_batch_and_warmup_from_n() -> None:
    """tokens = 20 x N; lr x (N/N0)^(-1/3); batch x (N/N0)^(2/3) in multiples; warmup over N
    tokens -- and a second validation changes nothing (the rule never reads what it sets)."""
    rule = ("train=ladder", "train.size_rule.reference_params=38016", "train.size_rule.lr=0.01",
            "train.size_rule.batch_size=4", "train.size_rule.batch_exponent=0.6666666667",
            "train.size_rule.batch_multiple=2", "train.size_rule.warmup_tokens_per_param=1",
            "data.sequence_length=128")
    small = compose_run("model=ladder", *rule)
    big = compose_run("model=ladder", "model.d_model=96", "model.n_layers=6", *rule)
    for config in (small, big):
        check_run(config, CPU_HOST)
    n_small, n_big = sizing.layer_params(small.model), sizing.layer_params(big.model)
    assert n_small == 38016  # model=ladder: d_model 32, 3 layers
    assert small.train.lr == pytest.approx(0.01) and small.train.global_batch_size == 4
    assert big.train.lr == pytest.approx(0.01 * (n_big / n_small) ** (-1 / 3))
    assert big.train.global_batch_size % 2 == 0
    assert abs(big.train.global_batch_size - 4 * (n_big / n_small) ** (2 / 3)) <= 1
    for config, n in ((small, n_small), (big, n_big)):
        tokens_per_step = config.train.global_batch_size * 128
        assert config.train.max_tokens == 20 * n
        assert config.train.max_steps == -(-20 * n // tokens_per_step)
        assert config.train.warmup_steps == -(-n // tokens_per_step)
    before = (big.train.lr, big.train.global_batch_size, big.train.max_steps)
    check_run(big, CPU_HOST)
    assert (big.train.lr, big.train.global_batch_size, big.train.max_steps) == before


def test_flops_budget_trains_budget_over_flops_per_token() -> None:
    """isoFLOP jobs: tokens = budget / the whole model's FLOPs per token (LM head included), so
    the bigger model trains fewer tokens within one budget."""
    tokens = {}
    for d_model in (32, 64):
        config = compose_run("model=ladder", f"model.d_model={d_model}", "train=ladder",
                             "train.size_rule.tokens_per_param=null",
                             "train.size_rule.flops_budget=1e11", "data.bpe_vocab_size=1024",
                             f"data.sequence_length={SEQ}")
        vocab = check_run(config, CPU_HOST).vocab_size
        fpt = sizing.flops_per_token(config.model, SEQ, config.model.padded_vocab_size(vocab))
        assert config.train.max_tokens == int(1e11 // fpt)
        tokens[d_model] = config.train.max_tokens
    assert tokens[64] < tokens[32]
