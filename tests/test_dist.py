"""Distributed training on CPU over gloo: sharding changes memory, never the math.

Fast tests: the dist config (every invalid combination is one line, before any process starts),
launcher detection, the olmo-core mapping and the FSDP hook. Slow tests (marked, still run in CI):
real 2-rank training (FSDP, SHARD_GRAD_OP, DDP, HSDP 2x1) on the real Wikipedia sample through
``run.py`` and ``torchrun``, compared step by step with the single-process run; FSDP with bf16 and
CPU offload; state bytes per rank; checkpoints across world sizes; a dead and a hung rank. Runs are shared between tests (module-scoped cache) to keep the file short.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CPU_HOST,
    REPO,
    TINY,
    assert_one_line_error,
    compose_run,
    cpu_world,
    free_port,
    losses,
    read_jsonl,
)

from olmo_exp.base.errors import ConfigError
from olmo_exp.config import topology as topo
from olmo_exp.config.compose import shared_run_id
from olmo_exp.config.dist import DistConfig, ShardStrategy, Strategy
from olmo_exp.config.topology import Host, Topology, launcher_env, resolve_topology
from olmo_exp.runtime import console, launch
from olmo_exp.runtime.launch import fsdp_hooks

# Small enough that 2 ranks on 2 cores spend their time in the real code paths, not in matmuls.
PLAIN = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4"]
# Heterogeneous blocks: heads 4/8, KV heads 1/2, FFN 64/512, residual scales 0.8/1.2.
LWS = ["model=lws_tiny", "model.d_model=128", "model.n_layers=2"]
MODELS = {"plain": PLAIN, "lws": LWS}
DISTS = {
    "fsdp": ["dist=fsdp", "dist.nproc_per_node=2"],
    "fsdp_sgo": ["dist=fsdp", "dist.nproc_per_node=2", "dist.shard_strategy=SHARD_GRAD_OP"],
    "ddp": ["dist=ddp", "dist.nproc_per_node=2"],
    # HYBRID_SHARD, 2 replicas x 1 shard: replicated like DDP, through FSDP2's 2-D mesh.
    "hsdp": ["dist=hsdp", "dist.nproc_per_node=2", "dist.num_replicas=2"],
    "fsdp_bf16_offload": ["dist=fsdp", "dist.nproc_per_node=2", "dist.mixed_precision=true",
                          "dist.cpu_offload=true"],
    # Activation checkpointing (every block recomputed in backward) under per-module wrapping.
    "fsdp_ac_fine": ["dist=fsdp", "dist.nproc_per_node=2", "dist.activation_checkpointing=true",
                     "dist.wrapping_strategy=fine_grained"],
    # A real shard dimension: 4 ranks as 2 replicas x 2 shards (one sequence per rank per step).
    "hsdp_2x2": ["dist=hsdp", "dist.nproc_per_node=4", "dist.num_replicas=2",
                 "dist.shard_degree=2", "train.micro_batch_size=1"],
}
# fp32 on one CPU: the 2-rank reductions add the same numbers in another order (measured
# max relative difference 1e-7, i.e. about one float32 ulp); 1e-6 leaves room, nothing more.
REL_TOL = 1e-6
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
              "SLURM_STEP_NUM_TASKS", "SLURM_JOB_NUM_NODES", "SUBMITIT_EXECUTOR",
              "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_NTASKS")


def assert_same_losses(got: dict[int, float], want: dict[int, float], steps: list[int]) -> float:
    assert sorted(s for s in got if s in steps) == steps, got
    worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in steps)
    assert worst <= REL_TOL, (worst, got, want)
    return worst


@pytest.fixture(autouse=True)
def _cpu_not_launched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests run outside any launcher and on CPU over gloo (exact fp32 equality, 2 ranks on
    one host), whatever the machine has: ranks they start see no GPU, and so does this process's
    topo.host(), read afresh for each test."""
    import torch

    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    topo.host.cache_clear()
    yield
    topo.host.cache_clear()


# -- fast: configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["dist=hsdp", "dist.nproc_per_node=2", "dist.num_replicas=1"], "dist.num_replicas"),
        (["dist=hsdp", "dist.nproc_per_node=4", "dist.num_replicas=2", "dist.shard_degree=1"],
         "dist.num_replicas"),
        (["dist=hsdp", "dist.nproc_per_node=4", "dist.num_replicas=3"], "dist.num_replicas"),
        (["dist=ddp", "dist.nproc_per_node=2", "dist.cpu_offload=true"], "dist.cpu_offload"),
        (["dist=single", "dist.cpu_offload=true"], "dist.cpu_offload"),
        (["dist=fsdp", "dist.shard_strategy=HYBRID_SHARD"], "dist.shard_strategy"),
        (["dist=fsdp", "dist.shard_strategy=NO_SHARD"], "dist.shard_strategy"),
        (["dist=ddp", "dist.shard_strategy=FULL_SHARD"], "dist.shard_strategy"),
        (["dist=hsdp", "dist.shard_strategy=SHARD_GRAD_OP"], "dist.shard_strategy"),
        (["dist=single", "dist.shard_strategy=FULL_SHARD"], "dist.shard_strategy"),
        (["dist=single", "dist.nproc_per_node=2"], "dist.strategy"),
        (["dist=fsdp", "dist.nproc_per_node=3"], "train.global_batch_size"),
        (["dist=fsdp", "dist.nproc_per_node=2", "train.global_batch_size=8",
          "train.micro_batch_size=8"], "train.global_batch_size"),
        (["dist=fsdp", "dist.nodes=2", "dist.nproc_per_node=2"], "dist.nodes"),
        (["dist=ddp", "dist.nproc_per_node=2", "dist.wrapping_strategy=blocks"],
         "dist.wrapping_strategy"),
        (["dist=ddp", "dist.nproc_per_node=2", "dist.prefetch_factor=1"], "dist.prefetch_factor"),
        (["dist=fsdp", "dist.num_replicas=2"], "dist.num_replicas"),
        (["dist=fsdp", "dist.activation_checkpointing=true", "dist.prefetch_factor=1"],
         "dist.prefetch_factor"),
        (["dist=fsdp", "dist.timeout_s=0"], "dist.timeout_s"),
        (["dist=fsdp", "dist.nodes=0"], "dist.nodes"),
    ],
)
def test_invalid_combination_is_one_line(overrides: list[str], key: str) -> None:
    assert_one_line_error(overrides, key)


@pytest.mark.parametrize(
    "overrides",
    [
        ["dist=single"],
        ["dist=single", "dist.mixed_precision=true"],  # bf16 autocast, no FSDP wrapper needed
        ["dist=fsdp"],  # one process on CPU: a real 1-rank process group
        ["dist=fsdp", "dist.nproc_per_node=2", "dist.shard_strategy=SHARD_GRAD_OP"],
        ["dist=fsdp", "dist.nproc_per_node=2", "dist.cpu_offload=true", "dist.mixed_precision=true"],
        ["dist=hsdp", "dist.nproc_per_node=4", "train.micro_batch_size=2"],
        ["dist=hsdp", "dist.nproc_per_node=4", "dist.num_replicas=null", "dist.shard_degree=2",
         "train.micro_batch_size=2"],
        ["dist=ddp", "dist.nproc_per_node=2", "dist.activation_checkpointing=true"],
        ["dist=fsdp", "dist.nproc_per_node=2", "dist.activation_checkpointing=true",
         "dist.wrapping_strategy=fine_grained"],
        ["dist=fsdp", "dist.nproc_per_node=2", "dist.wrapping_strategy=blocks",
         "dist.prefetch_factor=2"],
    ],
)
def test_valid_combinations(overrides: list[str]) -> None:
    compose_run(*overrides).validate(CPU_HOST)


def test_hsdp_preset_has_one_replica_per_node() -> None:
    """The preset's null num_replicas is what its comment says: one replica per node, and two on
    a single node (so that it has a replica dimension)."""
    hsdp = compose_run("dist=hsdp").dist
    assert hsdp.num_replicas is None
    assert hsdp.hsdp_degrees(8) == (2, 4)  # one node of 8 ranks: 2 x 4
    assert dataclasses.replace(hsdp, nodes=2).hsdp_degrees(8) == (2, 4)  # 2 nodes x 4 ranks
    assert dataclasses.replace(hsdp, nodes=4).hsdp_degrees(16) == (4, 4)


def test_cli_rejects_invalid_combination_before_any_rank(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "hsdp"
    proc = run_cli("dist=hsdp", "dist.nproc_per_node=2", "dist.num_replicas=1", run_dir=run_dir,
                   check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: dist.num_replicas=1 is invalid:")
    assert "replicas" in errors[0]
    assert not run_dir.exists()  # no rank logs, nothing written
    assert "default_role" not in proc.stdout + proc.stderr  # torch elastic never started


def gpu_world(nproc: int = 1) -> Topology:
    return Topology(nproc_per_node=nproc, nodes=1, world_size=nproc, gpus=nproc, launched=None)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_precision_and_compile_follow_the_device(strategy: Strategy) -> None:
    """What each strategy becomes in olmo-core (data-parallel config, precision, compile, AC)."""
    from olmo_core.config import DType
    from olmo_core.distributed.parallel import DataParallelType

    extra = {"nproc_per_node": 4, "num_replicas": 2} if strategy == Strategy.hsdp else {}
    auto = DistConfig(strategy=strategy, **extra)  # mixed_precision and compile null
    assert auto.mixed_precision is None and auto.compile is None
    # olmo-core's data-parallel config: none for one process; HSDP's replicas x shards.
    for cuda in (False, True):
        dp_type = auto.dp_config(4, on_gpu=cuda)
        if strategy == Strategy.single:
            assert dp_type is None
        else:
            assert dp_type is not None and dp_type.name == DataParallelType(strategy.value)
            assert dp_type.reduce_dtype == DType.float32
        if strategy == Strategy.hsdp:  # replicas x shards
            wide = DistConfig(strategy=strategy, nproc_per_node=8, num_replicas=2).dp_config(8, on_gpu=cuda)
            assert wide is not None and (wide.num_replicas, wide.shard_degree) == (2, 4)
    assert auto.ac_config() is None
    assert DistConfig(strategy=strategy, activation_checkpointing=True, **extra).ac_config() is not None
    # CPU: fp32, no compile; every olmo-core knob off.
    assert auto.precision(on_gpu=False) == "fp32" and auto.compile_enabled(on_gpu=False) is False
    assert auto.autocast_precision(on_gpu=False) is None
    assert getattr(auto.dp_config(4, on_gpu=False), "param_dtype", None) is None
    # CUDA: bf16 compute with fp32 master weights, compiled.
    assert auto.mixed_precision_enabled(on_gpu=True) and auto.compile_enabled(on_gpu=True)
    sharded = strategy in (Strategy.fsdp, Strategy.hsdp)
    dp = auto.dp_config(4, on_gpu=True)
    if sharded:
        assert auto.precision(on_gpu=True) == "bf16_params_fp32_reduce"
        assert dp is not None and (dp.param_dtype, dp.reduce_dtype) == (DType.bfloat16, DType.float32)
        assert auto.autocast_precision(on_gpu=True) is None
    else:
        assert auto.precision(on_gpu=True) == "bf16_autocast"
        assert auto.autocast_precision(on_gpu=True) == DType.bfloat16
        assert getattr(dp, "param_dtype", None) is None
    # An explicit value wins on either device.
    for cuda in (False, True):
        off = DistConfig(strategy=strategy, mixed_precision=False, compile=False, **extra)
        assert off.precision(on_gpu=cuda) == "fp32" and off.compile_enabled(on_gpu=cuda) is False
        on = DistConfig(strategy=strategy, mixed_precision=True, compile=True, **extra)
        assert on.precision(on_gpu=cuda) != "fp32"
        if strategy in (Strategy.fsdp, Strategy.hsdp):  # bf16 shards, fp32 reduce: on CPU too
            dp_on = on.dp_config(4, on_gpu=cuda)
            assert dp_on is not None and (dp_on.param_dtype, dp_on.reduce_dtype) == (
                DType.bfloat16, DType.float32)
        assert on.compile_enabled(on_gpu=cuda) is cuda  # olmo-core compiles on CUDA only
    assert DistConfig(strategy=Strategy.fsdp).resolved_shard_strategy == ShardStrategy.FULL_SHARD
    assert DistConfig(strategy=Strategy.fsdp, nproc_per_node=2).param_shard_degree(2) == 2
    assert DistConfig(strategy=Strategy.ddp, nproc_per_node=2).param_shard_degree(2) == 1
    assert topo.backend_for(DistConfig(), cpu_world()) is None
    assert topo.backend_for(DistConfig(strategy=Strategy.fsdp), cpu_world()) == "gloo"
    assert topo.backend_for(DistConfig(strategy=Strategy.fsdp), gpu_world(2)) == "cuda:nccl,cpu:gloo"


@pytest.mark.slow
def test_run_records_and_prints_what_dist_resolved_to(runs: Runs, tmp_path: Path) -> None:
    """A single-process bf16 run (olmo-core autocast) trains; the header line and
    model_summary.json say what precision/compile/world/backend the nulls became."""
    auto, bf16 = runs.get("plain"), tmp_path / "bf16"
    summary = json.loads((auto / "model_summary.json").read_text())["dist"]
    assert summary == {"strategy": "single", "world_size": 1, "backend": None, "precision": "fp32",
                       "compile": False, "device": "cpu"}
    assert ("run: strategy=single world_size=1 precision=fp32 compile=False "
            "device='cpu'") in train_log(auto)  # no backend=None: one plain process
    assert "dist: params" not in train_log(auto)  # nothing sharded: no dist line
    runs.cli(*PLAIN, "dist.mixed_precision=true", run_dir=bf16, cwd=tmp_path)
    assert json.loads((bf16 / "model_summary.json").read_text())["dist"]["precision"] == "bf16_autocast"
    got, want = losses(bf16), losses(auto)
    assert sorted(got) == sorted(want) and all(math.isfinite(v) for v in got.values())
    assert got != want  # bf16 compute really ran ...
    assert abs(got[1] - want[1]) / want[1] < 0.01  # ... on the same model and data


def test_fsdp_hook_patches_only_when_needed_and_restores() -> None:
    import olmo_core.nn.transformer.block as block
    import olmo_core.nn.transformer.model as model

    original = model.fully_shard
    with fsdp_hooks(DistConfig(strategy=Strategy.fsdp), on_gpu=False):
        assert model.fully_shard is original  # FULL_SHARD: olmo-core untouched
    sgo = DistConfig(strategy=Strategy.fsdp, shard_strategy=ShardStrategy.SHARD_GRAD_OP,
                     cpu_offload=True)
    assert sgo.fsdp_overrides(on_gpu=False)["reshard_after_forward"] is False
    assert sgo.fsdp_overrides(on_gpu=False)["offload_policy"].pin_memory is False  # no accelerator
    assert sgo.fsdp_overrides(on_gpu=True)["offload_policy"].pin_memory is True
    with fsdp_hooks(sgo, on_gpu=False):
        assert model.fully_shard is not original and block.fully_shard is model.fully_shard
    assert model.fully_shard is original and block.fully_shard is original


def test_launcher_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert launcher_env() is None
    fsdp = DistConfig(strategy=Strategy.fsdp)
    assert resolve_topology(fsdp, CPU_HOST).world_size == 1  # CPU, nothing launched: one process

    # torchrun --nproc_per_node 2: the launcher's layout wins over the null config
    with monkeypatch.context() as m:
        for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
            m.setenv(key, value)
        torchrun = Host(launcher_env(), gpus=0)
    world = resolve_topology(fsdp, torchrun)
    assert (world.launched.kind, world.nproc_per_node, world.world_size) == ("torchrun", 2, 2)
    assert not world.spawns
    topo.validate_world(fsdp, world)
    with pytest.raises(ConfigError, match="dist.nproc_per_node=4 .*torchrun started 2"):
        cfg = DistConfig(strategy=Strategy.fsdp, nproc_per_node=4)
        topo.validate_world(cfg, resolve_topology(cfg, torchrun))
    with pytest.raises(ConfigError, match="dist.strategy='single'"):
        topo.validate_world(DistConfig(), resolve_topology(DistConfig(), torchrun))

    # A task of a submitit SLURM job of 4 tasks on 2 nodes (what submitit's sbatch script and srun set)
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
                       "SLURM_JOB_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "4"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="SLURM_STEP_NUM_TASKS=4 .*hydra/launcher=slurm"):
        launcher_env()  # plain `srun -n 4 python run.py`: four copies of one run, refused
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    env = launcher_env()
    assert env is not None and (env.kind, env.world_size, env.local_world_size, env.num_nodes) == (
        "slurm", 4, 2, 2)
    assert console.rank_from_env() == 3
    two_nodes = DistConfig(strategy=Strategy.fsdp, nodes=2)
    topo.validate_world(two_nodes, resolve_topology(two_nodes, Host(env, gpus=0)))
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a job of one task: run.py starts its own ranks
    assert launcher_env() is None

    # hydra/launcher=local: submitit's local executor, 2 tasks on this machine
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    for key, value in {"SUBMITIT_LOCAL_JOB_ID": "8", "SUBMITIT_LOCAL_GLOBALID": "1",
                       "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(key, value)
    env = launcher_env()
    assert env is not None and (env.kind, env.world_size, env.local_world_size, env.num_nodes) == (
        "submitit_local", 2, 2, 1)
    assert console.rank_from_env() == 1


@pytest.mark.parametrize("gpus", [0, 1, 8])
def test_null_nproc_single_is_one_rank_others_take_every_gpu(gpus: int) -> None:
    host = Host(launched=None, gpus=gpus)
    assert resolve_topology(DistConfig(), host).world_size == 1
    for strategy in (Strategy.ddp, Strategy.fsdp, Strategy.hsdp):
        world = resolve_topology(DistConfig(strategy=strategy), host)
        assert (world.nproc_per_node, world.world_size) == (max(gpus, 1), max(gpus, 1))
        assert world.spawns == (gpus > 1)
    assert resolve_topology(DistConfig(strategy=Strategy.fsdp, nproc_per_node=2), host).world_size == 2


def test_default_command_validates_on_a_multi_gpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)  # topo.host() not read yet
    compose_run().validate()  # `python run.py` on 8 GPUs: dist=single trains on one of them
    assert topo.topology(compose_run().dist).world_size == 1
    fsdp = compose_run("dist=fsdp", "train.global_batch_size=16", "train.micro_batch_size=2").dist
    assert topo.topology(fsdp).world_size == 8  # dist=fsdp takes the whole node
    with pytest.raises(ConfigError, match="dist.nproc_per_node=9 .*8 GPU"):
        compose_run("dist=fsdp", "dist.nproc_per_node=9").validate()


def test_host_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = topo.host()
    assert first.launched is None
    # What init_distributed exports for olmo-core later in the process changes nothing.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert topo.host() is first and not topo.already_launched()


FSDP_ONE_RANK = ("dist=fsdp: world size 1 (no GPU on this host), so nothing is sharded or "
                 "replicated; for more ranks set dist.nproc_per_node=N (run.py starts them) or "
                 "start with torchrun --nproc_per_node N")


def test_one_rank_fsdp_notice() -> None:
    assert topo.lone_rank_notice(DistConfig(strategy=Strategy.fsdp), cpu_world()) == FSDP_ONE_RANK
    assert topo.lone_rank_notice(DistConfig(strategy=Strategy.fsdp), cpu_world(2)) is None
    assert topo.lone_rank_notice(DistConfig(strategy=Strategy.fsdp, nproc_per_node=1),
                                   cpu_world()) is None  # asked for explicitly
    assert topo.lone_rank_notice(DistConfig(), cpu_world()) is None
    assert "(1 GPU on this host)" in topo.lone_rank_notice(DistConfig(strategy=Strategy.ddp),
                                                             gpu_world(1))


def test_one_rank_fsdp_says_so_once(run_cli, tmp_path: Path) -> None:
    notice = FSDP_ONE_RANK
    proc = run_cli("dist=fsdp", "dry_run=true", run_dir=tmp_path / "dry")  # CPU: see the fixture
    assert (proc.stdout + proc.stderr).count(notice) == 1


def test_shared_run_id_names_one_launch_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "from olmo_exp.config.compose import shared_run_id; print(shared_run_id())"
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "none"}  # plain torchrun, static rendezvous
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    ids = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert len(ids) == 1 and next(iter(ids)) != "none"  # same parent (here: pytest) -> same dir
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc123")
    assert shared_run_id() == "abc123"  # c10d / --standalone: torchrun's own id
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    assert shared_run_id() == "none"  # several nodes: the only id they share


# -- slow: real 2-rank training -----------------------------------------------------------------


class Runs:
    """Each named run executes once per module; tests share them."""

    def __init__(self, data_dir: Path, root: Path) -> None:
        self.data_dir, self.root = data_dir, root
        self.done: dict[str, Path] = {}

    def cli(self, *overrides: str, run_dir: Path | None, cwd: Path, torchrun: int = 0,
            check: bool = True) -> subprocess.CompletedProcess:
        launcher = [sys.executable]
        if torchrun:
            launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
                         f"--master_port={free_port()}"]
        args = [*launcher, str(REPO / "run.py"), f"data.output_dir={self.data_dir}", *TINY,
                *overrides]
        if run_dir is not None:
            args.append(f"hydra.run.dir={run_dir}")
        two_ranks = torchrun or any(o == "dist.nproc_per_node=2" for o in overrides)
        env = {**os.environ, "HYDRA_FULL_ERROR": "1", "CUDA_VISIBLE_DEVICES": "",
               "OMP_NUM_THREADS": "1" if two_ranks else "2"}  # one thread per rank on 2 cores
        cwd.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
        return proc

    def get(self, model: str, dist: str = "single") -> Path:
        """One process: ``python run.py``. Two ranks: the user's command for plain FSDP; the others
        through the same run object in this process (Run.execute spawns the ranks, as run.py
        does), which saves the launching process's start-up (~7 s each on 2 cores)."""
        name = f"{model}-{dist}"
        if name not in self.done:
            run_dir = self.root / name
            overrides = [*MODELS[model], *DISTS.get(dist, [])]
            if dist == "single" or name == "plain-fsdp":
                self.cli(*overrides, run_dir=run_dir, cwd=self.root)
            else:
                self.execute(*overrides, run_dir=run_dir)
            self.done[name] = run_dir
        return self.done[name]

    def execute(self, *overrides: str, run_dir: Path) -> None:
        from olmo_exp.runtime.run import Run

        config = compose_run(f"data.output_dir={self.data_dir}", *TINY, *overrides)
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the ranks: one thread each on 2 cores
        try:
            Run(config=config, run_dir=run_dir).execute()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = saved


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(data_dir, tmp_path_factory.mktemp("dist-runs"))


def train_log(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("model,dist", [
    ("plain", "fsdp"), ("plain", "ddp"), ("plain", "hsdp"),
    # Heterogeneous blocks sharded (and not resharded after forward: SHARD_GRAD_OP's hook).
    ("lws", "fsdp"), ("lws", "fsdp_sgo"), ("plain", "fsdp_ac_fine"), ("plain", "hsdp_2x2"),
])
def test_two_ranks_train_exactly_like_one(runs: Runs, model: str, dist: str) -> None:
    single = losses(runs.get(model))
    run_dir = runs.get(model, dist)
    worst = assert_same_losses(losses(run_dir), single, steps=list(range(1, 7)))
    print(f"{model}/{dist}: max relative loss difference vs 1 process = {worst:.2e}")
    # What FSDP2 really applied to the blocks: the hook took effect (or stayed out of the way).
    expected = {"fsdp": "mesh (2,) ('dp',), reshard_after_forward=True, cpu_offload=False",
                "fsdp_sgo": "reshard_after_forward=False",
                "hsdp": "mesh (2, 1) ('dp_replicate', 'dp_shard'), reshard_after_forward=True",
                "fsdp_ac_fine": "mesh (2,) ('dp',), reshard_after_forward=True",
                "hsdp_2x2": "mesh (2, 2) ('dp_replicate', 'dp_shard'), reshard_after_forward=True",
                "ddp": "blocks not FSDP-sharded"}[dist]
    assert expected in train_log(run_dir)
    assert (run_dir / "logs").is_dir()  # ranks were started by run.py via torch elastic


@pytest.mark.slow
def test_fsdp_bf16_with_cpu_offload_trains(runs: Runs) -> None:
    """dist.mixed_precision=true and dist.cpu_offload=true under 2-rank FSDP on CPU: bf16 compute
    really runs (the losses move off the fp32 ones, slightly), the blocks' shards really are
    offloaded, and they stay sharded."""
    single = losses(runs.get("plain"))
    run_dir = runs.get("plain", "fsdp_bf16_offload")
    got = losses(run_dir)
    assert sorted(got) == list(range(1, 7)) and all(math.isfinite(v) for v in got.values())
    summary = json.loads((run_dir / "model_summary.json").read_text())["dist"]
    assert (summary["strategy"], summary["world_size"], summary["precision"]) == (
        "fsdp", 2, "bf16_params_fp32_reduce")
    relative = {s: abs(got[s] - single[s]) / single[s] for s in got}
    print(f"bf16 + cpu_offload vs fp32 1 process: relative loss differences {relative}")
    # fp32 ranks stay within REL_TOL (about one ulp); bf16 compute moves the losses further
    # (measured: up to 1.4e-4) ...
    assert max(relative.values()) > 10 * REL_TOL
    assert max(relative.values()) < 0.01  # ... on the same model and data
    assert got[6] < got[1]  # and it learns
    assert "reshard_after_forward=True, cpu_offload=True" in train_log(run_dir)
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["dist/rank_state_bytes"] <= 0.55 * last["dist/unsharded_state_bytes"]


@pytest.mark.slow
def test_full_shard_halves_per_rank_state(runs: Runs) -> None:
    single = read_jsonl(runs.get("plain") / "metrics.jsonl")[-1]
    fsdp = read_jsonl(runs.get("plain", "fsdp") / "metrics.jsonl")[-1]
    ddp = read_jsonl(runs.get("plain", "ddp") / "metrics.jsonl")[-1]
    one_process = single["dist/rank_state_bytes"]
    assert single["dist/unsharded_state_bytes"] == one_process
    assert fsdp["dist/unsharded_state_bytes"] == one_process  # the same model and AdamW state
    ratio = fsdp["dist/rank_state_bytes"] / one_process
    print(f"FULL_SHARD x2: {fsdp['dist/rank_state_bytes']:.0f} B per rank vs "
          f"{one_process:.0f} B in one process = {ratio:.4f}")
    assert ratio <= 0.55
    assert ddp["dist/rank_state_bytes"] == one_process  # replicas hold everything
    assert re.search(r"dist: params \+ optimizer state [\d.]+ [KMG]iB on this rank",
                     train_log(runs.get("plain", "fsdp")))  # human-sized


def _truncate_to(run_dir: Path, src: Path, step: int) -> None:
    """A copy of ``src`` as it was after ``step``: later checkpoints and metrics removed."""
    shutil.copytree(src, run_dir, ignore=shutil.ignore_patterns("logs"))
    for ckpt in (run_dir / "checkpoints").glob("step*"):
        if int(ckpt.name[4:]) > step:
            shutil.rmtree(ckpt)
    kept = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line and __import__("json").loads(line)["step"] <= step]
    (run_dir / "metrics.jsonl").write_text("\n".join(kept) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["2to1", "1to2"])
def test_checkpoint_resumes_across_world_sizes(runs: Runs, direction: str) -> None:
    single = losses(runs.get("plain"))
    src, resume = ((runs.get("plain", "fsdp"), []) if direction == "2to1"
                   else (runs.get("plain"), DISTS["fsdp"]))
    run_dir = runs.root / f"resume-{direction}"
    _truncate_to(run_dir, src, step=3)
    if resume:
        runs.execute(*PLAIN, *resume, run_dir=run_dir)
    else:
        runs.cli(*PLAIN, run_dir=run_dir, cwd=runs.root)
    log = train_log(run_dir)
    assert "Checkpoint successfully loaded" in log and "step3" in log
    worst = assert_same_losses(losses(run_dir), single, steps=[4, 5, 6])
    print(f"resume {direction}: max relative loss difference = {worst:.2e}")


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_dir(runs: Runs) -> None:
    cwd = runs.root / "torchrun-cwd"
    runs.cli(*PLAIN, "dist=fsdp", run_dir=None, cwd=cwd, torchrun=2)
    run_dirs = [p for p in (cwd / "outputs").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs  # both ranks' Hydra chose the same directory
    run_dir = run_dirs[0]
    assert not (run_dir / "logs").exists()  # run.py saw torchrun's ranks and started none
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step3", "step6"]
    assert "FSDP2 blocks: mesh (2,)" in train_log(run_dir)
    assert_same_losses(losses(run_dir), losses(runs.get("plain")), steps=list(range(1, 7)))


@pytest.mark.slow
@pytest.mark.parametrize("dist,mesh", [("fsdp", "mesh (2,) ('dp',)"),
                                       ("hsdp", "mesh (2, 1) ('dp_replicate', 'dp_shard')")])
def test_two_torchrun_nodes_train_like_one_process(runs: Runs, dist: str, mesh: str) -> None:
    """Two "nodes" on this machine: two torchrun agents (--nnodes 2, one rank each, a static
    rendezvous at 127.0.0.1) as a user starts them on two hosts, with one explicit run dir.
    dist.nodes=2: FSDP over both, HSDP with one replica per node (the preset's null)."""
    reference = losses(runs.get("plain"))  # also prepares the data before two ranks look for it
    run_dir, port = runs.root / f"two-nodes-{dist}", free_port()
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    procs = []
    for node_rank in (0, 1):
        cwd = runs.root / f"two-nodes-{dist}-cwd{node_rank}"  # nothing shared but the run dir
        cwd.mkdir()
        args = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                f"--node_rank={node_rank}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                f"--master_port={port}", str(REPO / "run.py"), f"data.output_dir={runs.data_dir}",
                *TINY, *PLAIN, f"dist={dist}", "dist.nodes=2", f"hydra.run.dir={run_dir}"]
        procs.append(subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-4000:] for o in outs)
    assert f"FSDP2 blocks: {mesh}" in train_log(run_dir)
    summary = json.loads((run_dir / "model_summary.json").read_text())["dist"]
    assert (summary["strategy"], summary["world_size"]) == (dist, 2)
    assert_same_losses(losses(run_dir), reference, steps=list(range(1, 7)))


def _dying_worker(config_dict: dict[str, Any], run_dir: str, data_dir: str) -> None:
    """The real training worker; rank 1 dies abruptly once training has logged a step."""
    from olmo_exp.runtime.worker import train_worker

    if os.environ["RANK"] == "1":
        metrics = Path(run_dir) / "metrics.jsonl"

        def die() -> None:
            while not (metrics.exists() and metrics.read_text().strip()):
                time.sleep(0.05)
            os._exit(7)

        threading.Thread(target=die, daemon=True).start()
    train_worker(config_dict, run_dir, data_dir)


@pytest.mark.slow
def test_dead_rank_fails_the_job_with_its_name(data_dir: Path, tmp_path: Path) -> None:
    from olmo_exp.data.prep import prepare

    config = compose_run(f"data.output_dir={data_dir}", *TINY, *PLAIN, *DISTS["fsdp"],
                         "train.max_steps=500", "dist.timeout_s=60")
    manifest = prepare(config.data, config.validate())
    start = time.monotonic()
    with pytest.raises(launch.RankFailedError) as err:
        launch.spawn(_dying_worker, (config.to_dict(), str(tmp_path), str(manifest.root)), nproc=2,
                     log_dir=tmp_path / "logs")
    elapsed = time.monotonic() - start
    message = str(err.value)
    print(f"died after {elapsed:.1f}s: {message}")
    assert message.startswith("rank 1 of 2 failed first")
    assert "exited with code 7" in message and str(tmp_path / "logs") in message
    assert "\n" not in message
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps and max(steps) < 50  # died mid-training, and the job did not go on
    assert elapsed < 60


def _hanging_worker(timeout_s: int) -> None:
    """Rank 1 stays alive but never joins; rank 0's collective must give up after timeout_s."""
    import torch
    import torch.distributed as dist

    launch.init_distributed(DistConfig(strategy=Strategy.fsdp, timeout_s=timeout_s), seed=0)
    # A group made later without a timeout, as olmo-core's bookkeeping/checkpoint groups are.
    group = dist.new_group(backend="gloo")
    if dist.get_rank() == 1:
        time.sleep(600)
    dist.all_reduce(torch.ones(1), group=group)


@pytest.mark.slow
def test_hung_rank_fails_after_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(launch.RankFailedError) as err:
        launch.spawn(_hanging_worker, (3,), nproc=2, log_dir=tmp_path / "logs")
    elapsed = time.monotonic() - start
    message = str(err.value)
    print(f"hung rank: failed after {elapsed:.1f}s: {message}")
    assert message.startswith("rank 0 of 2 failed first") and "timed out" in message.lower()
    assert 3 <= elapsed < 60  # waited for the 3 s timeout, then failed (not torch's 30 min)
