"""The training recipe: train=olmo2 (olmo-core's OLMo-2 optimizer and schedule), token budgets,
z-loss, checkpoint retention, data-loader workers, whole-batch micro-batches."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import CPU_HOST, TINY, assert_one_line_error, compose_run, losses, read_jsonl

from olmo_exp.config.run import RunConfig


def resolved(*overrides: str, host=CPU_HOST) -> RunConfig:
    config = compose_run(*overrides)
    config.validate(host)
    return config


def test_olmo2_gives_olmo_core_the_recipe() -> None:
    """What olmo-core receives under train=olmo2: the values of olmo-core's OLMo-2 script
    (src/scripts/official/OLMo2/OLMo-2-0325-32B-train.py) and cookbook (configure_train_module)."""
    from olmo_core.optim import CosWithWarmup

    train = resolved("train=olmo2").train
    module = train.train_module_config(sequence_length=256)
    optim = module.optim
    assert (optim.lr, optim.betas, optim.eps, optim.weight_decay) == (6e-4, (0.9, 0.95), 1e-8, 0.1)
    assert [(g.params, g.opts) for g in optim.group_overrides] == [
        (["embeddings.weight"], {"weight_decay": 0.0})]
    assert type(module.scheduler) is CosWithWarmup
    assert (module.scheduler.warmup, module.scheduler.alpha_f) == (2000, 0.1)
    assert (module.max_grad_norm, module.z_loss_multiplier) == (1.0, 1e-5)
    checkpointer = train.trainer_config(run_dir=Path("run"), callbacks={}).callbacks["checkpointer"]
    assert (checkpointer.save_interval, checkpointer.ephemeral_save_interval,
            checkpointer.max_checkpoints) == (1000, 200, 3)
    # 1e9 tokens of 16 x 256 per step, rounded up
    assert train.max_steps == math.ceil(1e9 / (16 * 256)) == 244141
    # smoke (the default) keeps its own settings: no z-loss, AdamW's eps, 100 steps
    smoke = resolved().train.train_module_config(sequence_length=256)
    assert smoke.z_loss_multiplier is None and smoke.optim.lr == 3e-3


def test_linear_schedule_decays_to_its_floor() -> None:
    from olmo_core.optim import LinearWithWarmup

    train = resolved("train.scheduler=linear", "train.alpha_f=0.0", "train.max_steps=20").train
    scheduler = train.scheduler_config()
    assert type(scheduler) is LinearWithWarmup and scheduler.alpha_f == 0.0
    assert scheduler.get_lr(1.0, 20, 20) == 0.0 and scheduler.get_lr(1.0, 10, 20) == 1.0
    assert scheduler.get_lr(1.0, 15, 20) == pytest.approx(0.5)


def test_token_budget_rounds_up_to_whole_steps() -> None:
    # 8 x 256 = 2048 tokens per step: 2048 -> 1 step, 2049 -> 2 steps (at least the budget)
    steps = [resolved("train.max_steps=null", f"train.max_tokens={n}").train.max_steps
             for n in (2048, 2049, 20480)]
    assert steps == [1, 2, 10]
    # a resolved config validates again unchanged (the worker and the sweep re-check it)
    config = resolved("train.max_steps=null", "train.max_tokens=2049")
    config.validate(CPU_HOST)
    assert (config.train.max_steps, config.train.max_tokens) == (2, 2049)


def typed(*overrides: str, hydra: bool = False) -> RunConfig:
    """The RunConfig run.py's task receives for this command line (``hydra``: as a sweep point's
    config, whose ``hydra.overrides.task`` are the point's overrides), validated."""
    from conftest import compose

    from olmo_exp.config.compose import compose_run as compose_typed
    from olmo_exp.config.compose import run_config

    config = run_config(compose(overrides, hydra=True)) if hydra else compose_typed(list(overrides))
    config.validate(CPU_HOST)
    return config


@pytest.mark.parametrize("hydra", [False, True], ids=["command_line", "sweep_point"])
@pytest.mark.parametrize(
    "overrides,steps,tokens",
    [
        (["train.max_tokens=20480"], 10, 20480),  # smoke's max_steps=100 gives way: 20480 / (8 x 256)
        (["train=olmo2", "train.max_steps=100"], 100, None),  # olmo2's max_tokens=1e9 gives way
        (["train=olmo2", "train.max_tokens=40960"], 10, 40960),  # the preset's own kind: as typed
        (["train.max_steps=7", "train.max_steps=null", "train.max_tokens=4096"], 2, 4096),
    ],
)
def test_the_budget_typed_replaces_the_presets_other(overrides: list[str], steps: int,
                                                     tokens: int | None, hydra: bool) -> None:
    config = typed(*overrides, hydra=hydra)
    assert (config.train.max_steps, config.train.max_tokens) == (steps, tokens)


def test_both_budgets_typed_stay_an_error() -> None:
    from olmo_exp.base.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        typed("train.max_tokens=20480", "train.max_steps=5")
    assert err.value.key == "train.max_tokens" and "\n" not in str(err.value)
    assert "train.max_steps (5)" in str(err.value)


def test_micro_batch_null_is_each_ranks_whole_share() -> None:
    from conftest import Host

    assert resolved("train.micro_batch_size=null").train.micro_batch_size == 8
    two = resolved("dist=fsdp", "dist.nproc_per_node=2", "train.micro_batch_size=null",
                   host=Host(launched=None, gpus=0))
    assert two.train.micro_batch_size == 4


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["train.max_steps=null"], "train.max_steps"),
        (["train.max_steps=null", "train.max_tokens=0"], "train.max_tokens"),
        (["train.ephemeral_checkpoint_interval=50"], "train.ephemeral_checkpoint_interval"),
        (["train.keep_last_checkpoints=0"], "train.keep_last_checkpoints"),
        (["train.betas=[0.9,1.5]"], "train.betas"),
        (["train.alpha_f=2"], "train.alpha_f"),
        (["train.z_loss_multiplier=-1"], "train.z_loss_multiplier"),
        (["train.num_workers=-1"], "train.num_workers"),
        (["train.micro_batch_size=null", "train.global_batch_size=3", "dist=fsdp",
          "dist.nproc_per_node=2"], "train.global_batch_size"),
    ],
)
def test_recipe_errors_are_one_line(overrides: list[str], key: str) -> None:
    assert_one_line_error(overrides, key)


def test_olmo2_trains_to_its_token_budget_and_keeps_exactly_the_checkpoints(
        run_cli, tmp_path: Path) -> None:
    """train=olmo2 on CPU: 1700 tokens at 4 x 64 per step = ceil(6.6) = 7 steps, z-loss on, a
    data-loader worker; permanent checkpoints every 3 steps (keep 2), ephemeral every 2: after the
    run only the newest 2 permanent ones remain (6 and the final 7), no ephemeral one."""
    run_dir = tmp_path / "run"
    proc = run_cli("train=olmo2", *TINY, "train.max_steps=null", "train.max_tokens=1700",
                   "train.warmup_steps=2", "train.lr=3e-3", "train.num_workers=1",
                   "train.checkpoint_interval=3", "train.ephemeral_checkpoint_interval=2",
                   "train.keep_last_checkpoints=2", run_dir=run_dir)
    assert sorted(losses(run_dir)) == list(range(1, 8))
    assert "training 7 steps from scratch" in proc.stdout
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert any("train/Z loss" in r for r in records), records[-1].keys()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step6", "step7"]
