"""Composition of every config option, and every validation error: one line, key named, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from olmo_exp.experiment import RunConfig
from olmo_exp.schema import register
from olmo_exp.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
GROUPS = ["model", "model/lws", "dist", "data", "train"]

register()


def compose_run(*overrides: str) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, RunConfig)
    return config


def assert_one_line_error(overrides: list[str], key: str) -> None:
    """The composed config fails validation with one line that starts with ``key=value``."""
    config = compose_run(*overrides)
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert err.value.key == key
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{key}=")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_option_composes_and_validates(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}"]
    if (group, option) == ("data", "files"):  # this preset needs the user's file
        (tmp_path / "docs.jsonl").write_text('{"text": "hello"}\n')
        overrides.append(f"data.path={tmp_path / 'docs.jsonl'}")
    if group == "dist" and option in ("ddp", "fsdp", "hsdp"):
        overrides.append("dist.nproc_per_node=2")
    config = compose_run(*overrides)
    config.validate()
    if group == "model":
        assert config.model.name == option
    if group == "data":
        assert config.data.name == option


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), group


def test_gqa_3kv_is_12_query_3_kv_heads() -> None:
    config = compose_run("model=gqa_3kv")
    specs = config.model.layer_specs()
    assert [(s.n_heads, s.n_kv_heads) for s in specs] == [(12, 3)] * config.model.n_layers


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.n_kv_heads=5"], "model.n_kv_heads"),
        (["model.n_heads=7"], "model.n_heads"),  # 256 / 7 with head_dim unset
        (["model.d_model=0"], "model.d_model"),
        (["model.head_dim=-4"], "model.head_dim"),
        (["model.head_dim=33"], "model.head_dim"),
        (["model.vocab_size=100"], "model.vocab_size"),
        (["train.max_steps=0"], "train.max_steps"),
        (["train.lr=-1e-3"], "train.lr"),
        (["train.micro_batch_size=3"], "train.global_batch_size"),
        (["train.global_batch_size=0"], "train.global_batch_size"),
        (["train.checkpoint_interval=-1"], "train.checkpoint_interval"),
        (["train.checkpoint_interval=0", "train.stop_at_step=3"], "train.stop_at_step"),
        (["train.warmup_steps=500"], "train.warmup_steps"),
        (["train.stop_at_step=101"], "train.stop_at_step"),
        (["data.sequence_length=4096"], "data.sequence_length"),
        (["data.sequence_length=0"], "data.sequence_length"),
        (["data.max_articles=0"], "data.max_articles"),
        (["data.path=/nonexistent/dump.xml.bz2"], "data.path"),
        (["generate.max_new_tokens=0"], "generate.max_new_tokens"),
        (["generate.interval=-1"], "generate.interval"),
        (["dist.nproc_per_node=0"], "dist.nproc_per_node"),
    ],
)
def test_validation_errors_name_the_key(overrides: list[str], key: str) -> None:
    assert_one_line_error(overrides, key)


@pytest.mark.parametrize(
    "override",
    ["dist.strategy=fdsp", "dist.shard_strategy=FULL", "model.d_model=big", "train.typo_key=1",
     "model=no_such_model"],
)
def test_typos_fail_at_compose(override: str) -> None:
    with pytest.raises(Exception) as err:
        compose_run(override)
    assert override.split("=")[0].split(".")[-1] in str(err.value) or "no_such_model" in str(err.value)


def test_cli_error_is_one_line_and_writes_nothing(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "rejected" / "run"
    proc = run_cli("model.n_kv_heads=3", run_dir=run_dir, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: model.n_kv_heads=3 is invalid: must divide model.n_heads=8; valid: [1, 2, 4, 8]"
    ]
    assert not run_dir.exists() and not (tmp_path / "rejected").exists()


def test_cli_compose_gqa_fsdp(run_cli, tmp_path: Path) -> None:
    proc = run_cli("model=gqa_3kv", "dist=fsdp", "--cfg", "job")
    job = OmegaConf.create(proc.stdout)
    assert job.model.n_kv_heads == 3 and job.dist.strategy == "fsdp"
