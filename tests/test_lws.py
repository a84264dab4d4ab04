"""Layer-Wise Scaling (issue 3): OpenELM's per-layer math, the released OpenELM tables, the built
olmo-core modules, residual output scales, bad input, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_run, losses
from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig
from omegaconf.errors import ConfigAttributeError, ValidationError

from olmo_exp.base.errors import ConfigError
from olmo_exp.cli.overrides import check_overrides
from olmo_exp.config.lws import LWSConfig, layer_scalars, make_divisible
from olmo_exp.config.model import ModelConfig

VOCAB = 512  # small embeddings: these tests are about the blocks


def compose_model(*overrides: str) -> ModelConfig:
    return compose_run(*overrides).model


def table(model: ModelConfig) -> list[tuple[int, int, int, int, float]]:
    """(n_heads, n_kv_heads, head_dim, ffn_hidden_size, output_scale) per layer."""
    return [
        (s.n_heads, s.n_kv_heads, s.head_dim, s.ffn_hidden_size, s.output_scale)
        for s in model.layer_specs()
    ]


# -- OpenELM's rounding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "v,divisor,expected",
    [
        (128.0, 64, 128),  # already a multiple
        (171.52, 64, 192),  # int(171.52 + 32) = 203 -> 3 * 64
        (212.48, 64, 192),  # int(244.48) = 244 -> 3 * 64 = 192 >= 0.9 * 212.48 = 191.2
        (288.0, 128, 384),  # int(352) -> 2 * 128 = 256 < 0.9 * 288 = 259.2 -> + 128
        (153.6, 128, 256),  # int(217.6) -> 128 < 138.24 -> + 128
        (2.56, 128, 128),  # rounds to 0 -> floored at the divisor itself
        (600.0, 256, 768),  # int(728) -> 512 < 540 -> + 256
    ],
)
def test_make_divisible_hand_values(v: float, divisor: int, expected: int) -> None:
    assert make_divisible(v, divisor) == expected


def test_scalars_round_like_openelm() -> None:
    # linspace(1.0, 4.55, 3)[1] is stored as 2.77499999999999991: numpy's round (x100 = 277.5,
    # half to even -> 278) gives 2.78, Python's round(float) gives 2.77. OpenELM rounds numpy
    # float64s, so 2.78.
    assert layer_scalars([1.0, 4.55], 3) == [1.0, 2.78, 4.55]
    # A decreasing schedule is just the reversed linspace.
    assert layer_scalars([1.2, 0.8], 3) == [1.2, 1.0, 0.8]
    assert layer_scalars(None, 3) is None


# -- hand-computed per-layer tables ---------------------------------------------------------

OPENELM_SEED = LWSConfig(
    name="openelm", qkv_scalars=[0.5, 1.0], fnn_scalars=[0.5, 4.0], output_scalars=[0.8, 1.2]
)

HAND_TABLES = {
    # lws_tiny's geometry. g = 16/4 = 4, head rounding unit = head_dim * g = 16 * 4 = 64.
    # qkv linspace(0.5, 1, 4) -> 0.5, 0.67, 0.83, 1.0; x256 = 128, 171.52, 212.48, 256
    #   -> make_divisible(., 64) = 128, 192, 192, 256 -> heads 8, 12, 12, 16; kv = heads/4.
    # fnn linspace(0.5, 4, 4) -> 0.5, 1.67, 2.83, 4.0; x256 = 128, 427.52, 724.48, 1024
    #   -> make_divisible(., 64): int(160)->128, int(459.52)->448, int(756.48)->704, 1024.
    # output linspace(0.8, 1.2, 4) -> 0.8, 0.9333 -> 0.93, 1.0667 -> 1.07, 1.2.
    "tiny_gqa": (
        ModelConfig(
            d_model=256, n_layers=4, n_heads=16, n_kv_heads=4, head_dim=16,
            lws=LWSConfig(**{**vars(OPENELM_SEED), "ffn_multiple_of": 64}),
        ),
        [
            (8, 2, 16, 128, 0.8),
            (12, 3, 16, 448, 0.93),
            (12, 3, 16, 704, 1.07),
            (16, 4, 16, 1024, 1.2),
        ],
    ),
    # Multi-head attention (g = 1), odd head counts. Unit = 64 * 1 = 64.
    # qkv linspace(0.25, 1, 3) -> 0.25, 0.625 -> 0.62 (exact tie, half to even), 1.0;
    #   x512 = 128, 317.44, 512 -> 128, int(349.44)=349 -> 5*64=320, 512 -> heads 2, 5, 8.
    # fnn linspace(1, 2, 3) -> 1.0, 1.5, 2.0; x512 = 512, 768, 1024, multiples of 128 already.
    "mha_odd_heads": (
        ModelConfig(
            d_model=512, n_layers=3, n_heads=8, head_dim=64,
            lws=LWSConfig(qkv_scalars=[0.25, 1.0], fnn_scalars=[1.0, 2.0], ffn_multiple_of=128),
        ),
        [(2, 2, 64, 512, 1.0), (5, 5, 64, 768, 1.0), (8, 8, 64, 1024, 1.0)],
    ),
    # Decreasing attention and output schedules; FFN not scaled. g = 4, unit = 32 * 4 = 128.
    # qkv linspace(1, 0.5, 3) -> 1.0, 0.75, 0.5; x256 = 256, 192, 128
    #   -> 256, int(256)=256 -> 256, int(192)=192 -> 128 -> heads 8, 8, 4; kv 2, 2, 1.
    # FFN: the model's own int(8 * 256 / 3) = 682 -> next multiple of 256 = 768 in every layer.
    "decreasing": (
        ModelConfig(
            d_model=256, n_layers=3, n_heads=8, n_kv_heads=2,
            lws=LWSConfig(qkv_scalars=[1.0, 0.5], output_scalars=[1.2, 0.8]),
        ),
        [(8, 2, 32, 768, 1.2), (8, 2, 32, 768, 1.0), (4, 1, 32, 768, 0.8)],
    ),
    # gqa_3kv (d384, 12 heads / 3 kv, head_dim 32) with qkv [0.25, 1.0] and fnn [0.5, 4.0].
    # Unit = 32 * 4 = 128. qkv linspace -> 0.25, 0.5, 0.75, 1.0; x384 = 96, 192, 288, 384
    #   -> int(160)->128, int(256)->256, int(352)->256 < 259.2 so 384, 384 -> heads 4, 8, 12, 12.
    # fnn -> 0.5, 1.67, 2.83, 4.0; x384 = 192, 641.28, 1086.72, 1536, multiple of 256:
    #   int(320)->256, int(769.28)->768, int(1214.72)->1024 (>= 978.05), 1536.
    "gqa_3kv_quarter": (
        ModelConfig(
            d_model=384, n_layers=4, n_heads=12, n_kv_heads=3,
            lws=LWSConfig(qkv_scalars=[0.25, 1.0], fnn_scalars=[0.5, 4.0]),
        ),
        [(4, 1, 32, 256, 1.0), (8, 2, 32, 768, 1.0), (12, 3, 32, 1024, 1.0), (12, 3, 32, 1536, 1.0)],
    ),
    # A tiny attention scalar never yields 0 heads: 0.01 * 256 = 2.56 rounds to 0 and is
    # floored at the unit 32 * 4 = 128 -> 4 heads / 1 kv head in every layer (OpenELM's floor).
    "floor_not_zero": (
        ModelConfig(
            d_model=256, n_layers=2, n_heads=8, n_kv_heads=2,
            lws=LWSConfig(qkv_scalars=[0.01, 0.01]),
        ),
        [(4, 1, 32, 768, 1.0), (4, 1, 32, 768, 1.0)],
    ),
}


@pytest.mark.parametrize("name", list(HAND_TABLES))
def test_hand_computed_tables(name: str) -> None:
    model, expected = HAND_TABLES[name]
    model.validate()
    assert table(model) == expected
    assert [s.index for s in model.layer_specs()] == list(range(model.n_layers))


def test_lws_tiny_preset_is_the_hand_table() -> None:
    model = compose_model("model=lws_tiny")
    model.validate()
    assert model.lws.name == "openelm"
    assert table(model) == HAND_TABLES["tiny_gqa"][1]


def test_cli_style_override_on_gqa_3kv() -> None:
    model = compose_model("model=gqa_3kv", "model/lws=openelm", "model.lws.qkv_scalars=[0.25,1.0]")
    model.validate()
    scales = [0.8, 0.93, 1.07, 1.2]  # the seed's output_scalars, linspace(0.8, 1.2, 4) rounded
    expected = [row[:4] + (s,) for row, s in zip(HAND_TABLES["gqa_3kv_quarter"][1], scales, strict=True)]
    assert table(model) == expected


# -- the released OpenELM models ------------------------------------------------------------
# num_query_heads / num_kv_heads / ffn_multipliers: the released HF config.json of
# apple/OpenELM-{270M,450M,1_1B,3B} (read from public mirrors of those files). FFN widths:
# modeling_openelm.py's make_divisible(ffn_multipliers[i] * model_dim, ffn_dim_divisor=256); the
# same per-layer widths appear in an independent C++ port's OpenELM config table.

RELEASED = {
    "openelm_270m": dict(
        head_dim=64,
        q=[12, 12, 12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 20, 20, 20, 20],
        kv=[3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5],
        ffn=[768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608,
             4864, 5120],
        ffn_mult=[0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53,
                  3.77, 4.0],
    ),
    "openelm_450m": dict(
        head_dim=64,
        q=[12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24],
        kv=[3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6],
        ffn=[768, 1024, 1280, 1536, 1792, 2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096, 4352,
             4608, 5120, 5376, 5632, 5888, 6144],
        ffn_mult=[0.5, 0.68, 0.87, 1.05, 1.24, 1.42, 1.61, 1.79, 1.97, 2.16, 2.34, 2.53, 2.71,
                  2.89, 3.08, 3.26, 3.45, 3.63, 3.82, 4.0],
    ),
    "openelm_1_1b": dict(
        head_dim=64,
        q=[16, 16, 16, 20, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24, 24, 24, 24, 24, 28, 28, 28, 28,
           28, 28, 32, 32, 32, 32],
        kv=[4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8],
        # Layers 13 and 14 share 4608: 2.19 * 2048 and 2.31 * 2048 both round to 18 * 256.
        ffn=[1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096, 4608,
             4608, 5120, 5376, 5632, 5888, 6144, 6400, 6656, 6912, 7168, 7424, 7680, 7936, 8192],
        ffn_mult=[0.5, 0.63, 0.76, 0.89, 1.02, 1.15, 1.28, 1.41, 1.54, 1.67, 1.8, 1.93, 2.06, 2.19,
                  2.31, 2.44, 2.57, 2.7, 2.83, 2.96, 3.09, 3.22, 3.35, 3.48, 3.61, 3.74, 3.87, 4.0],
    ),
    "openelm_3b": dict(
        head_dim=128,
        q=[12, 12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 20, 20, 20, 20,
           20, 20, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24, 24, 24],
        kv=[3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
            5, 6, 6, 6, 6, 6, 6],
        ffn=[1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 4096, 4352, 4608, 4864, 5120, 5632,
             5888, 6144, 6400, 6656, 7168, 7424, 7680, 7936, 8192, 8704, 8960, 9216, 9472, 9728,
             10240, 10496, 10752, 11008, 11264, 11776, 12032, 12288],
        ffn_mult=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0,
                  2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6,
                  3.7, 3.8, 3.9, 4.0],
    ),
}


@pytest.mark.parametrize("preset", list(RELEASED))
def test_openelm_presets_reproduce_released_tables(preset: str) -> None:
    released = RELEASED[preset]
    model = compose_model(f"model={preset}")
    model.validate()
    assert model.lws.output_scalars is None  # OpenELM has no residual output scales
    assert layer_scalars(model.lws.fnn_scalars, model.n_layers) == released["ffn_mult"]
    specs = model.layer_specs()
    assert [s.n_heads for s in specs] == released["q"]
    assert [s.n_kv_heads for s in specs] == released["kv"]
    assert [s.ffn_hidden_size for s in specs] == released["ffn"]
    assert {s.head_dim for s in specs} == {released["head_dim"]}
    assert {s.output_scale for s in specs} == {1.0}


def test_openelm_270m_parameter_count() -> None:
    # Tied 32000-token embeddings, as released: about 271.5M parameters ("270M").
    config = compose_model("model=openelm_270m").build_config(32000)
    assert 270e6 < config.num_params < 273e6


# -- the built olmo-core modules ------------------------------------------------------------


def param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_lws_off_equals_plain_olmo_core_model() -> None:
    model = compose_model("model=gqa_3kv")  # lws: "off"
    assert not model.lws.enabled
    config = model.build_config(VOCAB)
    assert config.block_overrides is None
    # The same geometry built straight from olmo-core, no LWS code involved.
    plain = TransformerConfig.llama_like(
        d_model=384, vocab_size=VOCAB, n_layers=4, n_heads=12, n_kv_heads=3,
        block_name=TransformerBlockType.reordered_norm, qk_norm=True, rope_theta=500_000,
        layer_norm_eps=1e-6,
    )
    built, built_plain = config.build(init_device="cpu"), plain.build(init_device="cpu")
    assert param_shapes(built) == param_shapes(built_plain)
    assert config.num_params == plain.num_params == sum(p.numel() for p in built.parameters())

    # Constant scalars that land on the uniform geometry change nothing either:
    # qkv 1.0 -> 384 = 12 heads; fnn 2.67 * 384 = 1025.28 -> 1024 = the plain FFN width.
    model.lws = LWSConfig(
        name="flat", qkv_scalars=[1.0, 1.0], fnn_scalars=[2.67, 2.67], output_scalars=[1.0, 1.0]
    )
    flat = model.build_config(VOCAB)
    assert flat.block_overrides is None
    assert param_shapes(flat.build(init_device="cpu")) == param_shapes(built_plain)


def assert_blocks_match_specs(model: ModelConfig, built: torch.nn.Module) -> None:
    d = model.d_model
    for spec in model.layer_specs():
        block = built.blocks[str(spec.index)]
        q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        ffn = spec.ffn_hidden_size
        shapes = {n: tuple(p.shape) for n, p in block.named_parameters()}
        assert shapes["attention.w_q.weight"] == (q, d), spec
        assert shapes["attention.w_k.weight"] == (kv, d), spec
        assert shapes["attention.w_v.weight"] == (kv, d), spec
        assert shapes["attention.w_out.weight"] == (d, q), spec
        assert shapes["feed_forward.w1.weight"] == (ffn, d), spec
        assert shapes["feed_forward.w2.weight"] == (d, ffn), spec
        assert shapes["feed_forward.w3.weight"] == (ffn, d), spec
        attn = block.attention
        assert (attn.n_heads, attn.n_kv_heads, attn.head_dim) == (
            spec.n_heads, spec.n_kv_heads, spec.head_dim,
        )
        assert block.attention_residual_stream.alpha == spec.output_scale
        assert block.feed_forward_residual_stream.alpha == spec.output_scale


def test_built_lws_tiny_modules_match_layer_specs() -> None:
    model = compose_model("model=lws_tiny")
    config = model.build_config(VOCAB)
    built = config.build(init_device="cpu")
    assert_blocks_match_specs(model, built)
    # olmo-core counts the heterogeneous blocks itself.
    assert config.num_params == sum(p.numel() for p in built.parameters())
    assert config.num_params != compose_model("model=lws_tiny", "model/lws=off").build_config(
        VOCAB
    ).num_params


@pytest.mark.parametrize("preset", list(RELEASED))
def test_built_openelm_modules_match_layer_specs(preset: str) -> None:
    model = compose_model(f"model={preset}")
    built = model.build_config(32000).build(init_device="meta")  # shapes only, no memory
    assert_blocks_match_specs(model, built)


def test_output_scale_scales_the_branches() -> None:
    model = compose_model("model=lws_tiny")
    torch.manual_seed(0)
    built = model.build_config(VOCAB).build(init_device="cpu")
    built.init_weights()
    block = built.blocks["0"]  # output scale 0.8
    alpha = model.layer_specs()[0].output_scale
    assert block.attention_residual_stream.alpha == alpha == 0.8
    x = torch.randn(2, 8, model.d_model)
    with torch.no_grad():
        out = block(x)
        # The reordered-norm block by hand: h = x + a * norm(attn(x)); h + a * norm(ffn(h)).
        h = x + alpha * block.attention_norm(block.attention(x))
        expected = h + alpha * block.feed_forward_norm(block.feed_forward(h))
        torch.testing.assert_close(out, expected)
        # ... and it is not the unscaled block.
        h1 = x + block.attention_norm(block.attention(x))
        unscaled = h1 + block.feed_forward_norm(block.feed_forward(h1))
        assert not torch.allclose(out, unscaled, atol=1e-4)


# -- bad input: one line, key named ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.lws.qkv_scalars=[0.5]"], "model.lws.qkv_scalars"),
        (["model.lws.qkv_scalars=[0.5,1.0,2.0]"], "model.lws.qkv_scalars"),
        (["model.lws.qkv_scalars=[0,1.0]"], "model.lws.qkv_scalars"),
        (["model.lws.fnn_scalars=[-0.5,4.0]"], "model.lws.fnn_scalars"),
        (["model.lws.fnn_scalars=[]"], "model.lws.fnn_scalars"),
        (["model.lws.output_scalars=[1.0,0.0]"], "model.lws.output_scalars"),
        (["model.lws.ffn_multiple_of=0"], "model.lws.ffn_multiple_of"),
        (["model.n_kv_heads=3"], "model.n_kv_heads"),  # 16 query heads
        # head_dim unset: 256 / 12 is not an integer head dimension.
        (["model.head_dim=null", "model.n_heads=12", "model.n_kv_heads=4"], "model.n_heads"),
    ],
)
def test_bad_lws_input_is_one_line_naming_the_key(overrides: list[str], key: str) -> None:
    model = compose_model("model=lws_tiny", *overrides)
    with pytest.raises(ConfigError) as info:
        model.validate()
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"{key}=") and "\n" not in message


@pytest.mark.parametrize(
    "override,cause,message",
    [
        ("model.lws.qkv_scalars=[a,b]", ValidationError,
         "model.lws.qkv_scalars=['a', 'b'] is invalid: value 'a' of type 'str' could not be "
         "converted to Float"),
        ("model.lws.qkv_scalars=0.5", ValidationError,
         "model.lws.qkv_scalars=0.5 is invalid: invalid value assigned: float is not a "
         "ListConfig, list or tuple."),
        ("model.lws.bogus=1", ConfigAttributeError,
         "model.lws.bogus=1: model.lws.bogus is not a config key; keys of model.lws: name, "
         "qkv_scalars, fnn_scalars, output_scalars, ffn_multiple_of, match"),
    ],
)
def test_wrong_types_fail_at_compose(override: str, cause: type, message: str) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose_model("model=lws_tiny", override)
    assert isinstance(err.value.__cause__, cause)
    assert "full_key: model.lws." in str(err.value.__cause__)
    with pytest.raises(ConfigError) as err:  # what run.py prints, before Hydra composes
        check_overrides([override])
    assert str(err.value) == message


# -- the command line -----------------------------------------------------------------------


# -- end to end: a short LWS training run, model_summary.json, the dry run -----------------------
# (Resuming an LWS run: tests/test_crash.py.)

TINY_RUN = ["model=lws_tiny", *TINY]


def checkpoint_shapes(step_dir: Path) -> dict[str, tuple[int, ...]]:
    """Parameter shapes as the run saved them (the distributed checkpoint's metadata)."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(step_dir / "model_and_optim")).read_metadata()
    return {
        key.removeprefix("model."): tuple(m.size)
        for key, m in meta.state_dict_metadata.items()
        if key.startswith("model.")
    }


def summary_table(summary: dict) -> list[tuple[int, int, int, int, float]]:
    return [(r["n_heads"], r["n_kv_heads"], r["head_dim"], r["ffn_hidden_size"], r["output_scale"])
            for r in summary["layers"]]


@pytest.mark.slow
def test_lws_tiny_trains_and_matches_its_summary(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(*TINY_RUN, run_dir=run_dir)
    loss = losses(run_dir)
    assert sorted(loss) == [1, 2, 3, 4, 5, 6]
    assert loss[6] < loss[1] - 0.3  # it learns (about 9.1 -> 8.1 here)
    # Generation runs on the LWS model at the end of training.
    gens = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in gens] == [6] and all(g["text"] for g in gens)

    # model_summary.json = the hand-computed table = what the run built and checkpointed.
    summary = json.loads((run_dir / "model_summary.json").read_text())
    assert summary_table(summary) == HAND_TABLES["tiny_gqa"][1]
    saved = checkpoint_shapes(run_dir / "checkpoints" / "step6")
    d = summary["d_model"]
    for r in summary["layers"]:
        p = f"blocks.{r['index']}."
        q, kv, ffn = r["n_heads"] * r["head_dim"], r["n_kv_heads"] * r["head_dim"], r["ffn_hidden_size"]
        assert saved[p + "attention.w_q.weight"] == (q, d)
        assert saved[p + "attention.w_k.weight"] == (kv, d)
        assert saved[p + "attention.w_v.weight"] == (kv, d)
        assert saved[p + "attention.w_out.weight"] == (d, q)
        assert saved[p + "feed_forward.w1.weight"] == (ffn, d)
        assert saved[p + "feed_forward.w2.weight"] == (d, ffn)
        assert saved[p + "feed_forward.w3.weight"] == (ffn, d)
        block_params = sum(torch.Size(s).numel() for k, s in saved.items() if k.startswith(p))
        assert block_params == r["params"]
    assert sum(torch.Size(s).numel() for s in saved.values()) == summary["n_params"]


def test_dry_run_prints_table_and_summary_without_data(run_cli, tmp_path: Path) -> None:
    """The 2-rank FSDP LWS run a user would start, described without data, ranks or weights."""
    run_dir = tmp_path / "dry"
    fresh_data = tmp_path / "no-data-here"
    proc = run_cli("model=lws_tiny", "dry_run=true", f"data.output_dir={fresh_data}",
                   "dist=fsdp", "dist.nproc_per_node=2", run_dir=run_dir,
                   env={"CUDA_VISIBLE_DEVICES": ""})
    assert not fresh_data.exists()  # no data prep
    summary = json.loads((run_dir / "model_summary.json").read_text())
    # What the dist nulls resolve to on this (CPU) host, for the 2 ranks the run would start.
    assert summary["dist"] == {"strategy": "fsdp", "world_size": 2, "backend": "gloo",
                               "precision": "fp32", "compile": False, "device": "cpu"}
    assert [r["index"] for r in summary["layers"]] == [0, 1, 2, 3]
    assert summary_table(summary) == HAND_TABLES["tiny_gqa"][1]
    built = compose_model("model=lws_tiny").build_config(summary["vocab_size"]).build(init_device="meta")
    assert summary["n_params"] == sum(p.numel() for p in built.parameters())  # counted, not computed
    assert summary["flops_per_token"] > 0
    # Printed: the header line (what dist resolved to), then the per-layer table (heads, kv heads,
    # head_dim, FFN width, scale) and totals; none of olmo-core's module listing.
    header, columns = proc.stdout.splitlines()[:2]
    assert header.startswith("run: strategy=fsdp world_size=2 backend=gloo precision=fp32")
    assert columns.split()[:3] == ["layer", "heads", "kv"]
    printed = [line.split() for line in proc.stdout.splitlines()]
    for r in summary["layers"]:
        expected = [str(r["index"]), str(r["n_heads"]), str(r["n_kv_heads"]),
                    str(r["head_dim"]), str(r["ffn_hidden_size"]), f"{r['output_scale']:.2f}"]
        assert expected in [cols[:6] for cols in printed], expected
    assert "GiB" in proc.stdout and "FLOPs/token" in proc.stdout
    assert "Transformer(" not in proc.stdout + proc.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()
