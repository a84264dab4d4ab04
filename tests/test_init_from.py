"""``train.init_from`` (start from another run's latest checkpoint or a Hugging Face OLMo-2
directory) and ``train.init_kv=mean_pool`` (MHA -> GQA uptraining): real runs, tiny models."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CPU_HOST, assert_one_line_error, cli, compose_run, losses, read_jsonl

from olmo_exp.base.errors import ConfigError

# A 4-layer model with 6 heads of 16 (MHA unless n_kv_heads is set); a few real steps.
GEOMETRY = ["model.d_model=96", "model.n_heads=6", "model.n_layers=4"]
TINY = [
    "data.sequence_length=64", "train.global_batch_size=4", "train.micro_batch_size=2",
    "train.warmup_steps=1", "train.log_interval=1", "train.eval_interval=0",
    "generate.interval=0", "generate.max_new_tokens=5",
]
HEAD_DIM = 16
# AdamW moves no fp32 weight at this learning rate (each update is ~1e-30 of a weight of ~1e-2):
# the checkpoint after step 1 holds exactly the weights the run started from.
FROZEN = "train.lr=1e-30"


def train(data_dir: Path, run_dir: Path, *overrides: str, check: bool = True,
          ) -> subprocess.CompletedProcess:
    return cli(f"data.output_dir={data_dir}", f"hydra.run.dir={run_dir}", *TINY, *overrides,
               cwd=run_dir.parent, env={"HYDRA_FULL_ERROR": "1"}, check=check)


def model_state(run_dir: Path) -> dict:
    """The latest checkpoint's model tensors as numpy, read with olmo-core's own reader."""
    from olmo_core.distributed.checkpoint import get_checkpoint_metadata, load_keys
    from olmo_core.train.checkpoint import Checkpointer

    path = f"{Checkpointer.latest_checkpoint(run_dir / 'checkpoints')}/model_and_optim"
    keys = [k for k in get_checkpoint_metadata(path).state_dict_metadata if k.startswith("model.")]
    return {k.removeprefix("model."): v.numpy() for k, v in zip(keys, load_keys(path, keys),
                                                                strict=True)}


@pytest.fixture(scope="module")
def mha_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source: a 4-layer MHA run (6 heads, 6 KV heads), 4 steps."""
    run_dir = tmp_path_factory.mktemp("init") / "mha"
    train(data_dir, run_dir, *GEOMETRY, "train.max_steps=4", "train.checkpoint_interval=4")
    return run_dir


@pytest.mark.slow  # trains (mha_run)
def test_mha_to_gqa_mean_pool_under_fsdp_matches_a_hand_computation(
        mha_run: Path, data_dir: Path) -> None:
    """6 KV heads -> 2 (groups of 3), loaded into a 2-rank FSDP model; the run's first weights are
    the source's, K/V (and the k norm's gains) averaged per group, everything else copied."""
    import numpy as np

    gqa = mha_run.parent / "gqa_fsdp"
    train(data_dir, gqa, *GEOMETRY, "model.n_kv_heads=2", f"train.init_from={mha_run}",
          "train.init_kv=mean_pool", FROZEN, "train.max_steps=1", "train.checkpoint_interval=1",
          "dist=fsdp", "dist.nproc_per_node=2")
    source, started = model_state(mha_run), model_state(gqa)
    assert started.keys() == source.keys()
    pooled = [k for k in source if source[k].shape != started[k].shape]
    assert sorted(pooled) == sorted(f"blocks.{i}.attention.{n}.weight" for i in range(4)
                                    for n in ("w_k", "w_v", "k_norm"))
    for key, theirs in source.items():
        if key in pooled:  # (6 heads x 16 rows) -> mean of heads 0-2 and of heads 3-5
            groups = theirs.astype(np.float64).reshape(2, 3, HEAD_DIM, *theirs.shape[1:])
            expected = groups.mean(axis=1).reshape(2 * HEAD_DIM, *theirs.shape[1:])
            np.testing.assert_allclose(started[key], expected, rtol=0, atol=1e-7, err_msg=key)
        else:
            assert np.array_equal(started[key], theirs), key
    summary = json.loads((gqa / "model_summary.json").read_text())
    assert summary["init"] == {
        "kind": "run", "path": str(mha_run.resolve()), "step": 4, "init_kv": "mean_pool",
        "checkpoint": str(mha_run.resolve() / "checkpoints" / "step4" / "model_and_optim")}
    assert [layer["n_kv_heads"] for layer in summary["layers"]] == [2, 2, 2, 2]


@pytest.mark.slow  # trains (mha_run)
def test_mismatched_shapes_are_refused_in_one_line_naming_the_tensor(
        mha_run: Path, data_dir: Path) -> None:
    """Nothing is written: the run dir a refused run would have used does not exist afterwards."""
    cases = [
        # a wider FFN: the first tensor that differs, both shapes
        (["model.hidden_size_multiplier=2"],
         f"error: train.init_from='{mha_run}' is invalid: tensor blocks.0.feed_forward.w1.weight "
         "has shape (256, 96) there but (512, 96) in this model"),
        # fewer KV heads without mean_pool: refused, with the key that would pool them
        (["model.n_kv_heads=2"],
         f"error: train.init_from='{mha_run}' is invalid: tensor blocks.0.attention.w_k.weight "
         "has shape (96, 96) there but (32, 96) in this model; train.init_kv=mean_pool pools a "
         "source's KV heads into fewer"),
        # fewer layers: the source has a tensor this model lacks
        (["model.n_layers=3"], f"error: train.init_from='{mha_run}' is invalid: has tensor "
         "blocks.3.attention.w_q.weight (96, 96), which this model lacks"),
    ]
    for overrides, line in cases:
        run_dir = mha_run.parent / "refused"
        proc = train(data_dir, run_dir, *GEOMETRY, f"train.init_from={mha_run}", *overrides,
                     "train.max_steps=1", check=False)  # short, should it ever start
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == line
        assert not run_dir.exists()


@pytest.mark.slow  # trains (mha_run)
def test_mean_pool_needs_a_multiple_of_the_kv_heads(mha_run: Path, data_dir: Path) -> None:
    """A 2-KV-head source can't pool into 3 KV heads: refused before data prep, in one line."""
    two_kv = mha_run.parent / "gqa_2kv"
    train(data_dir, two_kv, *GEOMETRY, "model.n_kv_heads=2", f"train.init_from={mha_run}",
          "train.init_kv=mean_pool", "train.max_steps=1", "train.checkpoint_interval=1")
    run_dir = mha_run.parent / "refused_kv"
    proc = train(data_dir, run_dir, *GEOMETRY, "model.n_kv_heads=3", f"train.init_from={two_kv}",
                 "train.init_kv=mean_pool", "train.max_steps=1", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: train.init_kv='mean_pool' is invalid: tensor blocks.0.attention.w_k.weight: the "
        "source's (32, 96) (2 heads of 16) can't be mean-pooled into this model's (48, 96) "
        "(3 KV heads): the source needs a multiple of 3 KV heads, more than 3")
    assert not run_dir.exists()


@pytest.mark.slow  # trains (mha_run)
def test_a_second_start_resumes_and_never_reads_the_source_again(
        mha_run: Path, data_dir: Path) -> None:
    """Resume wins over init_from: the second attempt continues from its own step-2 checkpoint
    (the source is gone by then) and its losses equal an uninterrupted init_from run's."""
    source = mha_run.parent / "source_copy"
    shutil.copytree(mha_run, source)
    common = [*GEOMETRY, f"train.init_from={source}", "train.max_steps=4",
              "train.checkpoint_interval=2"]
    whole, split = mha_run.parent / "whole", mha_run.parent / "split"
    train(data_dir, whole, *common)
    train(data_dir, split, *common, "train.stop_at_step=2")
    shutil.rmtree(source)  # a re-init would fail now
    proc = train(data_dir, split, *common)
    assert "resuming at step 2 of 4" in proc.stdout + proc.stderr
    assert losses(split) == losses(whole)  # steps 1-4, bitwise (CPU, fp32)
    assert [r["step"] for r in read_jsonl(split / "metrics.jsonl") if "train/CE loss" in r] == \
        [1, 2, 3, 4]
    record = json.loads((split / "model_summary.json").read_text())["init"]
    assert record["path"] == str(source.resolve()) and record["step"] == 4
    # the same run dir with another source: refused, its checkpoints untouched
    proc = train(data_dir, split, *GEOMETRY, f"train.init_from={mha_run}", "train.max_steps=6",
                 check=False)
    assert proc.returncode == 2
    assert "holds checkpoints of a different run (train.init_from:" in proc.stderr
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step2", "step4"]


# -- a Hugging Face OLMo-2 model made by transformers itself ------------------------------------


def tiny_hf_model(out: Path, *, n_kv_heads: int = 2) -> Path:
    """A random Olmo2ForCausalLM in the geometry of ``HF_GEOMETRY`` (vocab: the sample's 8k BPE)."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.Olmo2Config(
        vocab_size=8192, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv_heads, max_position_embeddings=2048,
        rope_theta=500_000, rms_norm_eps=1e-6, tie_word_embeddings=False,
        eos_token_id=None, pad_token_id=None)
    transformers.Olmo2ForCausalLM(config).save_pretrained(out)
    return out


HF_GEOMETRY = ["model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2", "model.n_layers=2"]


@pytest.mark.slow  # imports transformers, builds two models (~40 s on 2 busy cores)
def test_an_hf_model_loads_into_the_same_function(tmp_path: Path) -> None:
    """Direct forward: olmo-core's model initialized from the HF directory gives the HF model's
    logits (fp32, CPU)."""
    hf_dir = tiny_hf_model(tmp_path / "hf")
    import torch
    from transformers import Olmo2ForCausalLM

    from olmo_exp.build.init_from import InitKV, init_model, resolve_source

    model_config = compose_run(*HF_GEOMETRY).model.build_config(8192)
    model = model_config.build(init_device="cpu")
    init_model(model, resolve_source(str(hf_dir)), InitKV.exact, model_config)
    hf = Olmo2ForCausalLM.from_pretrained(hf_dir).eval()
    tokens = torch.randint(0, 8192, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model.eval()(tokens), hf(tokens).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def first_batch(run_dir: Path, work_dir: Path):
    """The run's first training batch, from its own token files, seed and batch size (the data
    loader the worker builds)."""
    from olmo_core.data import NumpyDataLoaderConfig

    from olmo_exp.data.manifest import Manifest

    manifest = Manifest.load(json.loads((run_dir / "model_summary.json").read_text())["data"]["dir"])
    dataset = manifest.dataset_config("train", sequence_length=64, work_dir=str(work_dir)).build()
    loader = NumpyDataLoaderConfig(global_batch_size=4 * 64, seed=42, num_workers=0,
                                   work_dir=str(work_dir)).build(dataset)
    loader.reshuffle(epoch=1)
    return next(iter(loader))["input_ids"]


def test_a_run_from_an_hf_model_starts_at_its_loss(run_cli: Callable, tmp_path: Path) -> None:
    """The first step's loss (metrics.jsonl) is the HF model's own loss on the same batch."""
    import torch

    hf_dir = tiny_hf_model(tmp_path / "hf")
    from transformers import Olmo2ForCausalLM

    run_dir = tmp_path / "from_hf"
    proc = run_cli(*TINY, *HF_GEOMETRY, f"train.init_from={hf_dir}", "train.max_steps=1",
                   "train.checkpoint_interval=1", run_dir=run_dir)
    assert f"training 1 steps from HF model {hf_dir}" in proc.stdout + proc.stderr
    batch = first_batch(run_dir, tmp_path / "work")
    hf = Olmo2ForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        hf_loss = hf(batch, labels=batch).loss.item()
    assert losses(run_dir)[1] == pytest.approx(hf_loss, abs=1e-5)
    init = json.loads((run_dir / "model_summary.json").read_text())["init"]
    assert init == {"kind": "hf", "path": str(hf_dir), "step": None, "checkpoint": str(hf_dir),
                    "init_kv": "exact"}


def test_an_hf_model_of_other_shapes_is_refused_in_one_line(run_cli: Callable,
                                                            tmp_path: Path) -> None:
    hf_dir = tiny_hf_model(tmp_path / "hf", n_kv_heads=4)
    run_dir = tmp_path / "refused"
    proc = run_cli(*TINY, *HF_GEOMETRY, f"train.init_from={hf_dir}", "train.max_steps=1",
                   run_dir=run_dir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: train.init_from='{hf_dir}' is invalid: tensor blocks.0.attention.w_k.weight has "
        "shape (64, 64) there but (32, 64) in this model; train.init_kv=mean_pool pools a "
        "source's KV heads into fewer")
    assert not run_dir.exists()


# -- compose-time checks (no training) -----------------------------------------------------------


def test_mean_pool_without_a_source_is_refused() -> None:
    assert_one_line_error(["train.init_kv=mean_pool"], "train.init_kv")


@pytest.mark.parametrize("make,expected", [
    (lambda d: None, "no such directory"),
    (lambda d: d.mkdir(), "must be a run directory with a checkpoint"),
    (lambda d: (d / "checkpoints" / "step5").mkdir(parents=True), "holds no complete checkpoint"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "llama"}')),
     "is a Hugging Face 'llama' model; only OLMo-2"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "olmo2"}')),
     "has a config.json but no weights"),
])
def test_a_source_that_is_neither_kind_is_refused(tmp_path: Path, make: Callable,
                                                  expected: str) -> None:
    from olmo_exp.build.init_from import resolve_source

    source = tmp_path / "source"
    make(source)
    with pytest.raises(ConfigError) as err:
        resolve_source(str(source))
    assert err.value.key == "train.init_from" and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_init_keys_compose() -> None:
    config = compose_run("train.init_from=/x", "train.init_kv=mean_pool")
    config.validate(CPU_HOST)
    assert (config.train.init_from, config.train.init_kv.value) == ("/x", "mean_pool")
