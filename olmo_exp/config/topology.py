"""The world a run will have: the ranks an outside launcher made (torchrun, SLURM/submitit tasks),
the GPUs and CPUs of this host, and what the dist group's nulls resolve to on it.

Reading the environment is cheap and import-free (torch and submitit load inside the functions
that need them), so composing and validating a config stays fast.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from olmo_exp.base.errors import ConfigError
from olmo_exp.config.dist import DistConfig, Strategy


@dataclass(frozen=True)
class LauncherEnv:
    """What an outside launcher (torchrun, SLURM/submitit tasks) says about the job's ranks."""

    kind: str
    world_size: int
    local_world_size: int
    num_nodes: int



def launcher_env() -> LauncherEnv | None:
    """The rank layout set by torchrun or a submitit job's tasks, or None when nothing started us."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or a task that already exported
        world = int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        return LauncherEnv("torchrun", world, local, int(env.get("NUM_NODES", max(world // local, 1))))
    if env.get("SUBMITIT_EXECUTOR") in ("slurm", "local"):  # hydra/launcher=slurm|local: task = rank
        from submitit import JobEnvironment

        job = JobEnvironment()
        if job.num_tasks > 1:
            kind = "slurm" if job.cluster == "slurm" else "submitit_local"
            return LauncherEnv(kind, job.num_tasks, job.num_tasks // job.num_nodes, job.num_nodes)
    elif int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:  # N copies of one run in one run dir
        raise ConfigError("SLURM_STEP_NUM_TASKS", int(env["SLURM_STEP_NUM_TASKS"]),
                          "srun started that many copies of one run; under SLURM the ranks are "
                          "submitit's tasks: python run.py -m hydra/launcher=slurm ...")
    return None



@dataclass(frozen=True)
class Host:
    """What this process found when it first looked: an outside launcher's ranks and the GPUs."""

    launched: LauncherEnv | None
    gpus: int



@functools.cache
def host() -> Host:
    """Read once per process: the launcher's env is fixed when a rank starts, and what
    init_distributed later exports for olmo-core (RANK, WORLD_SIZE) must not change the answer."""
    import torch

    return Host(launched=launcher_env(), gpus=torch.cuda.device_count())



@dataclass(frozen=True)
class Topology:
    """The world of one job as this process sees it: ranks per node, nodes, devices."""

    nproc_per_node: int
    nodes: int
    world_size: int
    gpus: int
    """GPUs visible on this node (0 = CPU ranks over gloo)."""
    launched: LauncherEnv | None
    """The outside launcher that made the ranks, or None (run.py makes them itself)."""

    @property
    def on_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def spawns(self) -> bool:
        """run.py must start the ranks itself."""
        return self.launched is None and self.world_size > 1



def resolve_topology(cfg: DistConfig, host: Host) -> Topology:
    """A pure function of the dist config and the host: a null ``nproc_per_node`` is what the
    launcher started, else 1 for dist=single and one rank per GPU (1 on CPU) for ddp/fsdp/hsdp."""
    launched = host.launched
    if launched is not None:
        return Topology(launched.local_world_size, launched.num_nodes, launched.world_size,
                        host.gpus, launched)
    if cfg.nproc_per_node is not None:
        nproc = cfg.nproc_per_node
    elif cfg.strategy == Strategy.single:
        nproc = 1
    else:
        nproc = max(host.gpus, 1)
    return Topology(nproc, cfg.nodes, cfg.nodes * nproc, host.gpus, None)



def topology(cfg: DistConfig) -> Topology:
    """This process's world for ``cfg`` (the host is read once per process)."""
    return resolve_topology(cfg, host())



def lone_rank_notice(cfg: DistConfig, world: Topology) -> str | None:
    """A data-parallel strategy that resolved to one rank shards nothing: say so, and how to get more."""
    if (cfg.strategy == Strategy.single or cfg.nproc_per_node is not None
            or world.launched is not None or world.world_size != 1):
        return None
    devices = "1 GPU" if world.on_gpu else "no GPU"
    return (f"dist={cfg.strategy.value}: world size 1 ({devices} on this host), so nothing is "
            "sharded or replicated; for more ranks set dist.nproc_per_node=N (run.py starts them) "
            "or start with torchrun --nproc_per_node N")



def available_cpus() -> int:
    """Cores this process may use (a SLURM/cgroup allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def validate_world(cfg: DistConfig, topology: Topology) -> None:
    """The dist group's checks that depend on the world the run will have (``topology``)."""
    strategy = cfg.strategy.value
    if cfg.cpu_offload and topology.on_gpu:
        # olmo-core 3.0 materializes the weights on the GPU (init_weights -> to_empty(cuda))
        # and FSDP2 refuses offloaded params that are not on CPU; verified on CPU only.
        raise ConfigError("dist.cpu_offload", True,
                          "is supported on CPU-only hosts in this version (olmo-core 3.0 "
                          "initializes weights on the GPU, which FSDP2 offload rejects)")
    launched = topology.launched
    if launched is None and cfg.nodes > 1:
        raise ConfigError("dist.nodes", cfg.nodes,
                          "> 1 needs a multi-node launcher (torchrun --nnodes, or SLURM tasks); "
                          "run.py itself starts ranks on one node only")
    if launched is not None:
        local = launched.local_world_size
        if cfg.nproc_per_node is not None and cfg.nproc_per_node != local:
            raise ConfigError("dist.nproc_per_node", cfg.nproc_per_node,
                              f"must be null or {local}: {launched.kind} started {local} ranks per node")
        if cfg.nodes * local != launched.world_size:
            raise ConfigError("dist.nodes", cfg.nodes,
                              f"must be {launched.world_size // local}: {launched.kind} started "
                              f"{launched.world_size} ranks, {local} per node")
    elif topology.on_gpu and topology.nproc_per_node > topology.gpus:
        # NCCL cannot run two ranks on one GPU ("Duplicate GPU detected").
        raise ConfigError("dist.nproc_per_node", cfg.nproc_per_node,
                          f"must be null or <= {topology.gpus}: this node has "
                          f"{topology.gpus} GPU(s), one per rank")

    world = topology.world_size
    if cfg.strategy == Strategy.single and world > 1:
        raise ConfigError("dist.strategy", strategy,
                          f"runs one process but the world size is {world}; "
                          "use dist=fsdp, ddp or hsdp (or dist.nproc_per_node=1)")
    if cfg.strategy == Strategy.hsdp:
        replicas, shard = cfg.hsdp_degrees(world)
        if replicas < 2:
            raise ConfigError("dist.num_replicas", cfg.num_replicas,
                              f"HYBRID_SHARD needs >= 2 replicas (got {replicas}, world size {world}); "
                              "set dist.num_replicas to a divisor of the world size, or use dist=fsdp")
        if replicas * shard != world:
            raise ConfigError("dist.num_replicas", cfg.num_replicas,
                              f"num_replicas x shard_degree = {replicas} x {shard} must equal "
                              f"the world size {world}")


def already_launched() -> bool:
    """True inside torchrun-, SLURM- or submitit-started ranks."""
    return host().launched is not None


def backend_for(cfg: DistConfig, world: Topology) -> str | None:
    """olmo-core backend string: None for one plain process, gloo on CPU, nccl + gloo on GPU."""
    if cfg.strategy == Strategy.single and world.world_size == 1:
        return None
    # olmo-core's default "cpu:gloo,cuda:nccl" calls torch.cuda.set_device: CPU-only hosts need "gloo".
    return "cuda:nccl,cpu:gloo" if world.on_gpu else "gloo"
