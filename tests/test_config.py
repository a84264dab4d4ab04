"""Composition of every config option, and every validation error: one line, key named, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, CPU_HOST, assert_one_line_error, compose_run, cpu_world

from olmo_exp.base.errors import ConfigError
from olmo_exp.cli.overrides import check_overrides

GROUPS = ["model", "model/lws", "dist", "data", "train"]


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
    if (group, option) == ("data", "tokens"):  # and this one the user's token files
        (tmp_path / "part-0.npy").write_bytes(bytes(512))
        overrides.append(f"data.token_files=[{tmp_path / 'part-0.npy'}]")
    if group == "dist" and option in ("ddp", "fsdp", "hsdp"):
        overrides.append("dist.nproc_per_node=2")
    config = compose_run(*overrides)
    config.validate(CPU_HOST)
    if group == "model":
        assert config.model.name == option
    if group == "data":
        assert config.data.name == option


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
        (["train.warmup_steps=-1"], "train.warmup_steps"),
        (["train.eval_interval=-5"], "train.eval_interval"),
        (["train.stop_at_step=101"], "train.stop_at_step"),
        (["data.sequence_length=4096"], "data.sequence_length"),
        (["data.sequence_length=0"], "data.sequence_length"),
        (["data.max_articles=0"], "data.max_articles"),
        (["data.path=/nonexistent/dump.xml.bz2"], "data.path"),
        (["generate.max_new_tokens=0"], "generate.max_new_tokens"),
        (["generate.interval=-1"], "generate.interval"),
        (["generate.temperature=-0.5"], "generate.temperature"),
        (["dist.nproc_per_node=0"], "dist.nproc_per_node"),
    ],
)
def test_validation_errors_name_the_key(overrides: list[str], key: str) -> None:
    assert_one_line_error(overrides, key)


def test_short_run_caps_warmup_and_intervals_at_its_length() -> None:
    config = compose_run("train.max_steps=5")  # defaults: warmup 10, intervals 50 and eval 25
    config.validate(CPU_HOST)
    train = config.train
    assert [train.capped(k) for k in ("warmup_steps", "checkpoint_interval", "eval_interval")] == [5] * 3
    assert config.notices(cpu_world()) == [
        "train.warmup_steps=10, train.checkpoint_interval=50, train.eval_interval=25, "
        "generate.interval=50 capped at train.max_steps=5 (longer than the run)"
    ]
    module = train.train_module_config(sequence_length=64)
    assert module.scheduler.warmup == 5
    trainer = train.trainer_config(run_dir=Path("run"), callbacks={})
    assert trainer.callbacks["checkpointer"].save_interval == 5
    # GPU memory metrics follow the world the run object resolved, not this machine's devices
    assert "gpu_memory" not in trainer.callbacks
    assert "gpu_memory" in train.trainer_config(run_dir=Path("run"), callbacks={}, on_gpu=True).callbacks
    assert train.eval_schedule() == (5, False)  # once, at step 5
    # a run as long as its warmup or longer is left alone and says nothing
    assert compose_run("train.max_steps=100").notices(cpu_world()) == []


TRAIN_KEYS = ("max_steps, max_tokens, global_batch_size, micro_batch_size, lr, betas, eps, "
              "weight_decay, scheduler, warmup_steps, alpha_f, max_grad_norm, z_loss_multiplier, "
              "checkpoint_interval, ephemeral_checkpoint_interval, keep_last_checkpoints, "
              "num_workers, eval_interval, eval_tokens, log_interval, seed, stop_at_step, "
              "peak_tflops, size_rule, init_from, init_kv, console")
TOP_LEVEL = ("valid: top-level keys (model, dist, data, train, generate, wandb, cluster, eval, dry_run) "
             "and groups (cluster, data, dist, eval, model, model/lws, sweep, train)")


@pytest.mark.parametrize(
    "override,message",
    [
        # every form of override that names a key: Hydra itself lets + and ++ add it (then ignored)
        ("train.typo_key=1", f"train.typo_key=1: train.typo_key is not a config key; keys of train: {TRAIN_KEYS}"),
        ("+train.typo_key=1", f"+train.typo_key=1: train.typo_key is not a config key; keys of train: {TRAIN_KEYS}"),
        ("++train.typo_key=1", f"++train.typo_key=1: train.typo_key is not a config key; keys of train: {TRAIN_KEYS}"),
        ("~train.typo_key", f"~train.typo_key: train.typo_key is not a config key; keys of train: {TRAIN_KEYS}"),
        ("+train.typo_key=1,2", f"+train.typo_key=1,2: train.typo_key is not a config key; keys of train: {TRAIN_KEYS}"),
        ("++train.warmup=3", "++train.warmup=3: train.warmup is not a config key; did you mean "
                             f"train.warmup_steps? keys of train: {TRAIN_KEYS}"),
        ("+typo=1", f"+typo=1: typo is not a config key; {TOP_LEVEL}"),
        ("++typo=1", f"++typo=1: typo is not a config key; {TOP_LEVEL}"),
        ("train.lr.x=1", "train.lr.x=1: train.lr.x is not a config key; train.lr is a value, not a config node"),
        ("+model/typo=x", "+model/typo=x: model/typo is not a config group; groups: cluster, data, dist, eval, model, model/lws, sweep, train"),
        ("++model.lws.qkv_scalar=[1,2]", "++model.lws.qkv_scalar=[1,2]: model.lws.qkv_scalar is not a config "
         "key; did you mean model.lws.qkv_scalars? keys of model.lws: name, qkv_scalars, fnn_scalars, "
         "output_scalars, ffn_multiple_of, match"),
        # a value the key's type cannot hold
        ("dist.strategy=fdsp", "dist.strategy='fdsp' is invalid: invalid value 'fdsp', expected one of "
                               "[single, ddp, fsdp, hsdp]"),
        ("model.d_model=big", "model.d_model='big' is invalid: value 'big' of type 'str' could not be "
                              "converted to Integer"),
    ],
)
def test_unknown_keys_fail_in_every_override_form(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert str(err.value) == message


@pytest.mark.parametrize("override", ["model=no_such_model", "+model=no_such_model",
                                      "dist=fsdp,no_such_model", "dist=dist_schema"])
def test_misspelled_group_option_lists_only_real_options(override: str) -> None:
    group = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    valid = str(err.value).split("; valid: ")[1]
    assert valid.split(", ") == options(group)  # the conf/ presets, never the *_schema entries
    assert str(err.value).startswith(f"{override}: {group} has no option ")


@pytest.mark.parametrize("override", [
    "++train.lr=1e-3", "~train.stop_at_step", "model=gqa_3kv,lws_tiny", "model/lws=openelm",
    "model.lws.qkv_scalars=[0.5,1.0]", "dist.nproc_per_node=null", "train.max_steps=1,2",
    "hydra.run.dir=out", "++hydra.job.env_set.FOO=1", "hydra/launcher=submitit_local",
    "data.output_dir=${oc.env:HOME}/data",
])
def test_valid_override_forms_pass(override: str) -> None:
    check_overrides([override])


def test_adding_a_real_group_keeps_working(tmp_path: Path) -> None:
    (tmp_path / "preset").mkdir()
    (tmp_path / "preset" / "short.yaml").write_text("# @package _global_\ntrain:\n  max_steps: 5\n")
    check_overrides(["+preset=short"], [str(tmp_path)])
    with pytest.raises(ConfigError, match=r"^\+preset=long: preset has no option 'long'; valid: short$"):
        check_overrides(["+preset=long"], [str(tmp_path)])
    config = compose_run("+preset=short", search_dir=tmp_path)
    assert config.train.max_steps == 5


def test_hydra_compose_rejects_plain_typos_itself() -> None:
    """The compose API (notebooks, tests) still gets Hydra's own errors for the plain forms."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ValidationError

    with pytest.raises(ConfigCompositionException) as err:
        compose_run("train.typo_key=1")
    assert isinstance(err.value.__cause__, ConfigAttributeError)
    assert "Key 'typo_key' not in 'TrainConfig'" in str(err.value.__cause__)
    with pytest.raises(ConfigCompositionException) as err:
        compose_run("dist.strategy=fdsp")
    assert isinstance(err.value.__cause__, ValidationError)
    with pytest.raises(MissingConfigException, match="Could not find 'model/no_such_model'"):
        compose_run("model=no_such_model")


@pytest.mark.parametrize("args", [["++train.typo_key=1"], ["+train.typo_key=1,2", "-m"],
                                  ["model=no_such_model"], ["train.seed=0,1"],
                                  ["hydra.callbacks.sweep_report.baseline=[model/lws=off]", "-m"],
                                  ["hydra.callbacks.sweep_report.baselin=[x]", "-m"]])
def test_cli_unknown_key_is_one_line_exit_2_nothing_written(run_cli, tmp_path: Path,
                                                            args: list[str]) -> None:
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {args[0]}: ")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, no multirun/


@pytest.mark.parametrize("argv, line", [
    # a sweep value without -m: Hydra's five-line "Ambiguous value" before
    (["train.seed=0,1"], "train.seed=0,1: several values are a sweep; add -m to run one job per "
                         "value: python run.py -m train.seed=0,1"),
    (["model=gqa_3kv", "model.lws.qkv_scalars=[0.25,1.0],[0.5,1.0]"],
     "model.lws.qkv_scalars=[0.25,1.0],[0.5,1.0]: several values are a sweep; add -m to run one "
     "job per value: python run.py -m model=gqa_3kv 'model.lws.qkv_scalars=[0.25,1.0],[0.5,1.0]'"),
    # an override Hydra's grammar rejects: "no viable alternative at input" and HYDRA_FULL_ERROR
    (["-m", "hydra.callbacks.sweep_report.baseline=[model/lws=off]"],
     "hydra.callbacks.sweep_report.baseline=[model/lws=off]: Hydra cannot parse this override (no "
     "viable alternative at input '[model/lws='); quote the value (list items one by one): "
     "'hydra.callbacks.sweep_report.baseline=[\"model/lws=off\"]'"),
    # a misspelt sweep report setting: "Key 'baselin' is not in struct" and a stack-trace hint
    (["-m", "hydra.callbacks.sweep_report.baselin=[model.n_kv_heads=6]"],
     "hydra.callbacks.sweep_report.baselin=[model.n_kv_heads=6]: baselin is not a sweep report "
     "setting; did you mean hydra.callbacks.sweep_report.baseline? settings: baseline, last_k, "
     "confidence, matched"),
    (["-m", "hydra.callbacks.sweep_report.last_kk=2"],
     "hydra.callbacks.sweep_report.last_kk=2: last_kk is not a sweep report setting; did you mean "
     "hydra.callbacks.sweep_report.last_k? settings: baseline, last_k, confidence, matched"),
])
def test_command_line_mistakes_hydra_answers_at_length_get_one_line(argv: list[str],
                                                                    line: str) -> None:
    from olmo_exp.cli.overrides import check_argv, report_settings

    with pytest.raises(ConfigError) as err:
        check_argv(argv)
    settings = ", ".join(report_settings())  # colleagues may add settings; the line lists them all
    assert str(err.value) == line.replace("baseline, last_k, confidence, matched", settings)


def test_the_quoted_form_shown_is_accepted() -> None:
    from olmo_exp.cli.overrides import check_argv

    check_argv(["-m", 'hydra.callbacks.sweep_report.baseline=["model/lws=off"]'])
    check_argv(["-m", "train.seed=0,1"])
    check_argv(["hydra.callbacks.sweep_report.last_k=2"])


@pytest.mark.slow
def test_data_prep_entry_leaves_only_the_data(tmp_path: Path) -> None:
    """``python -m olmo_exp.data`` writes its data and nothing else where it runs: Hydra's run dir
    (empty: the command writes nothing there) does not stay behind as an empty outputs/<time>/."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "olmo_exp.data", f"data.output_dir={tmp_path / 'data'}",
                           "data.max_articles=12", "data.bpe_vocab_size=300",
                           "data.sequence_length=16"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.slow
def test_data_prep_entry_rejects_unknown_keys(tmp_path: Path) -> None:
    """``python -m olmo_exp.data`` checks its overrides like run.py: one line, exit 2, nothing written."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "olmo_exp.data", "++data.max_article=3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1].startswith(
        "error: ++data.max_article=3: data.max_article is not a config key; "
        "did you mean data.max_articles?")
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_error_is_one_line_and_writes_nothing(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "rejected" / "run"
    proc = run_cli("model.n_kv_heads=3", run_dir=run_dir, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: model.n_kv_heads=3 is invalid: must divide model.n_heads=8; valid: [1, 2, 4, 8]"
    ]
    assert not run_dir.exists() and not (tmp_path / "rejected").exists()
