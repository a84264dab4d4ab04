"""Sampling inside training: identical tokens with and without FSDP, FSDP's state left as found,
ranks in lockstep, and temperature sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, free_port, read_jsonl

SCRIPT = r"""
import os, socket, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from olmo_exp.runtime.generation import generate_ids
from olmo_exp.config.model import ModelConfig

with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
config = ModelConfig(d_model=64, n_layers=2, n_heads=4).build_config(256)
plain = config.build(init_device="cpu"); plain.init_weights(max_seq_len=64)
sharded = config.build(init_device="cpu"); sharded.load_state_dict(plain.state_dict())
for block in sharded.blocks.values():
    fully_shard(block, reshard_after_forward=False)  # SHARD_GRAD_OP
fully_shard(sharded)

def reshard_state(model):
    return [(g.post_forward_mesh_info, m._get_fsdp_state()._auto_reshard_after_forward)
            for m in model.modules() if hasattr(m, "_get_fsdp_state")
            for g in m._get_fsdp_state()._fsdp_param_groups]

before = reshard_state(sharded)
sharded.train()
want = generate_ids(plain, [1, 2, 3], max_new_tokens=12)
got = generate_ids(sharded, [1, 2, 3], max_new_tokens=12)
assert got == want, (got, want)
assert sharded.training  # back in training mode
after = reshard_state(sharded)
assert after == before, (before, after)
assert any(info is None for info, _ in before)  # the SHARD_GRAD_OP blocks really are no-reshard
# training still works after sampling
out = sharded(torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[2, 3, 4, -100]]))
out.loss.backward()
dist.destroy_process_group()
print("OK", got)
"""


@pytest.mark.slow
def test_generation_under_fsdp_matches_and_keeps_shard_grad_op() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "2", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("OK [")
    assert len(json.loads(last[3:])) == 12  # 12 new tokens, equal with and without FSDP


LOCKSTEP = r"""
import os, sys, datetime, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from olmo_exp.runtime.generation import generate_ids
from olmo_exp.config.model import ModelConfig

rank, port = int(os.environ["RANK"]), os.environ["PORT"]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
torch.manual_seed(0)
config = ModelConfig(d_model=64, n_layers=2, n_heads=4).build_config(256)
plain = config.build(init_device="cpu"); plain.init_weights(max_seq_len=64)
sharded = config.build(init_device="cpu"); sharded.load_state_dict(plain.state_dict())
for block in sharded.blocks.values():
    fully_shard(block)
fully_shard(sharded)
EOS = 7

class Disagreeing(torch.nn.Module):
    # Rank 1 sees different logits: never rank 0's argmax, and EOS as its third token.
    def __init__(self, model):
        super().__init__(); self.model = model; self.calls = 0
    def forward(self, ids, **kw):
        logits = self.model(ids, **kw)
        if rank == 1:
            self.calls += 1
            top = logits[:, -1].argmax(-1)
            logits[:, -1, (top + 1) % logits.shape[-1]] += 1e3
            if self.calls == 3:
                logits[:, -1, EOS] = 1e6
        return logits

want = generate_ids(plain, [1, 2, 3], max_new_tokens=10, eos_token_id=EOS)
assert EOS not in want, want  # rank 0 alone never stops early
if rank == 1:  # the perturbation really changes this rank's own choice (checked unsharded)
    with torch.no_grad():
        local = int(Disagreeing(plain)(torch.tensor([[1, 2, 3]]), logits_to_keep=1)[:, -1].argmax())
    assert local != want[0], (local, want)
model = Disagreeing(sharded)
got = generate_ids(model, [1, 2, 3], max_new_tokens=10, eos_token_id=EOS)
# Training still works after sampling (no rank left behind in a collective).
model.model(torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[2, 3, 4, -100]])).loss.backward()
dist.barrier()
dist.destroy_process_group()
print("TOKENS", rank, got, want, flush=True)
# The rank hosting the TCP store may leave first; the other's gloo/store threads then sometimes
# abort at interpreter teardown ("terminate called without an active exception", SIGABRT) after
# everything above succeeded. Nothing is left to check: leave without that teardown.
os._exit(0)
"""


@pytest.mark.slow  # starts processes
def test_ranks_that_disagree_still_generate_rank_0s_tokens() -> None:
    """2 gloo ranks whose logits differ (another argmax, an EOS only rank 1 sees): rank 0 decides,
    every rank returns its tokens, nothing hangs."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", LOCKSTEP], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={"OMP_NUM_THREADS": "1", "PATH": "", "RANK": str(rank),
                                   "PORT": str(port), "PYTHONPATH": str(REPO)})
             for rank in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-4000:]
            outputs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    tokens = {}
    for out in outputs:
        (line,) = [line for line in out.splitlines() if line.startswith("TOKENS")]
        _, rank, rest = line.split(" ", 2)
        got, want = rest.split("] [")
        tokens[int(rank)] = (got + "]", "[" + want)
    assert tokens[0][0] == tokens[0][1]  # rank 0: its own greedy tokens, all 10
    assert tokens[1][0] == tokens[0][0]  # rank 1: rank 0's tokens, despite its own logits
    assert tokens[0][0].count(",") == 9


# -- temperature sampling (generate.temperature > 0) ------------------------------------------


class FixedLogits(torch.nn.Module):
    """A stand-in model whose next-token logits are always log(probs): sampling at temperature T
    must draw token i with probability probs[i]**(1/T) / sum_j probs[j]**(1/T)."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(probs).log())

    def forward(self, ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
        return self.logits.expand(ids.shape[0], 1, -1)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_temperature_samples_the_tempered_distribution(temperature: float) -> None:
    from olmo_exp.runtime.generation import generate_ids

    probs = [0.6, 0.3, 0.1]
    n = 2000  # one sample of n tokens = n independent draws (the logits ignore the prefix)
    draws = generate_ids(FixedLogits(probs), [0], max_new_tokens=n, temperature=temperature)
    tempered = [p ** (1 / temperature) for p in probs]
    for token, p in enumerate(tempered):
        expected = p / sum(tempered)
        seen = draws.count(token) / n
        assert abs(seen - expected) < 5 * (expected * (1 - expected) / n) ** 0.5, (token, seen, expected)
    assert generate_ids(FixedLogits(probs), [0], max_new_tokens=50) == [0] * 50  # 0 = greedy


class Characters:
    """A tokenizer for the callback: one id per character (ids < 256)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 256 for c in text]

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def _tiny_trainer(run_dir: Path, callback: Any, *, steps: int = 2, seq: int = 16) -> Any:
    """A real olmo-core Trainer as the worker builds one (train module, data loader, trainer from
    the train group), for a 2-layer model on 64 random sequences of ``seq`` tokens, on CPU."""
    import numpy as np
    from olmo_core.data import (
        NumpyDataLoaderConfig,
        NumpyDatasetDType,
        NumpyFSLDatasetConfig,
        TokenizerConfig,
    )

    from olmo_exp.config.model import ModelConfig
    from olmo_exp.config.train import TrainConfig

    tokens = run_dir / "tokens.npy"
    np.random.default_rng(0).integers(1, 256, size=64 * seq, dtype=np.uint16).tofile(tokens)
    train = TrainConfig(max_steps=steps, global_batch_size=2, micro_batch_size=2, warmup_steps=0,
                        checkpoint_interval=0, eval_interval=0, log_interval=1)
    model = ModelConfig(d_model=64, n_layers=2, n_heads=4).build_config(256)
    train_module = train.train_module_config(sequence_length=seq).build(model.build(init_device="meta"))
    work_dir = str(run_dir / "dataset-work")
    dataset = NumpyFSLDatasetConfig(
        tokenizer=TokenizerConfig(vocab_size=256, eos_token_id=0, pad_token_id=0),
        paths=[str(tokens)], sequence_length=seq, dtype=NumpyDatasetDType.uint16, work_dir=work_dir,
    ).build()
    loader = NumpyDataLoaderConfig(global_batch_size=train.global_batch_size * seq, seed=train.seed,
                                   num_workers=0, work_dir=work_dir).build(
        dataset, dp_process_group=train_module.dp_process_group)
    return train.trainer_config(run_dir=run_dir, callbacks={"generation": callback}).build(
        train_module, loader)


@pytest.mark.slow  # real training: 2 steps of a tiny model, ~2 s
def test_generate_temperature_reaches_the_samples(tmp_path: Path) -> None:
    """generate.temperature through the real callback on a real olmo-core Trainer: a sample after
    each step, seeded by the step (a rerun of a step samples the same text), not greedy, and
    greedy (0) ignores the seed."""
    from olmo_exp.config.generate import GenerateConfig
    from olmo_exp.runtime.generation import GenerationCallback, generate_ids

    path = tmp_path / "generations.jsonl"
    callback = GenerationCallback(config=GenerateConfig(temperature=1.0, max_new_tokens=8, interval=1),
                                  tokenizer=Characters(), path=path)
    trainer = _tiny_trainer(tmp_path, callback)
    trainer.fit()
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [1, 2]  # after each step; none again after the last
    hot = records[-1]["text"]
    assert len(hot.split()) == 8
    # The trained model as it is after step 2: sample again at the same step, then at another.
    assert callback.sample() == hot  # reproducible: the same step draws the same tokens
    trainer.global_step = 3
    assert callback.sample() != hot  # the step is the seed
    callback.config = replace(callback.config, temperature=0.0)
    greedy = callback.sample()
    trainer.global_step = 2
    assert callback.sample() == greedy != hot  # greedy: the same at any step, unlike sampling
    model, prompt = trainer.train_module.model, Characters().encode(callback.config.prompt)
    assert greedy == Characters().decode(generate_ids(model, prompt, max_new_tokens=8))
    assert len(read_jsonl(path)) == 6  # each written, as a run would
