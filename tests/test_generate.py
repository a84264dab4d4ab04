"""Sampling inside training: identical tokens with and without FSDP, and FSDP's state left as found."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = r"""
import os, socket, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from olmo_exp.generate import generate_ids
from olmo_exp.model import ModelConfig

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
