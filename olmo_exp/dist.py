"""The ``dist`` group: data parallelism through olmo-core's FSDP2/HSDP/DDP."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Strategy(str, Enum):
    single = "single"
    ddp = "ddp"
    fsdp = "fsdp"
    hsdp = "hsdp"


class ShardStrategy(str, Enum):
    FULL_SHARD = "FULL_SHARD"
    SHARD_GRAD_OP = "SHARD_GRAD_OP"
    HYBRID_SHARD = "HYBRID_SHARD"
    NO_SHARD = "NO_SHARD"


class WrappingStrategy(str, Enum):
    full = "full"
    blocks = "blocks"
    fine_grained = "fine_grained"


@dataclass
class DistConfig:
    strategy: Strategy = Strategy.single
    nproc_per_node: int | None = None
    """Ranks per node; null = number of GPUs, or 1 on CPU."""
    nodes: int = 1
    mixed_precision: bool = False
    """bf16 parameters, fp32 gradient reduction."""
    shard_strategy: ShardStrategy = ShardStrategy.FULL_SHARD
    cpu_offload: bool = False
    wrapping_strategy: WrappingStrategy = WrappingStrategy.full
    activation_checkpointing: bool = False
    compile: bool | None = None
    """null = on with a GPU, off on CPU."""
    timeout_s: int = 600
    """Process-group timeout: a dead or hung rank fails the job after this long."""

    # -- minimal single-process mapping; the dist issue fills in the multi-rank strategies --

    def resolved_nproc_per_node(self) -> int:
        if self.nproc_per_node is not None:
            return self.nproc_per_node
        import torch

        return max(torch.cuda.device_count(), 1)

    def world_size(self) -> int:
        return self.nodes * self.resolved_nproc_per_node()

    def validate(self, *, global_batch_size: int, micro_batch_size: int) -> None:
        from olmo_exp.validation import ConfigError, positive

        positive("dist.nodes", self.nodes)
        positive("dist.nproc_per_node", self.nproc_per_node, allow_none=True)
        positive("dist.timeout_s", self.timeout_s)
        world = self.world_size()
        if global_batch_size % (micro_batch_size * world) != 0:
            raise ConfigError(
                "train.global_batch_size", global_batch_size,
                f"must be a multiple of train.micro_batch_size x world size = {micro_batch_size} x {world}",
            )

    def dp_config(self):
        return None

    def ac_config(self):
        return None

    def compile_enabled(self) -> bool:
        import torch

        return bool(self.compile) if self.compile is not None else torch.cuda.is_available()
