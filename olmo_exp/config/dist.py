"""The ``dist`` group: data parallelism through olmo-core's FSDP2/HSDP/DDP.

``strategy`` picks the parallelism, ``shard_strategy`` (the classic FSDP names) refines it:

| strategy | shard_strategy (null = the first)  | olmo-core / FSDP2                                       |
|----------|------------------------------------|---------------------------------------------------------|
| single   | -                                  | no process group, ``dp_config=None``                    |
| ddp      | NO_SHARD                           | ``DataParallelType.ddp`` (``replicate``)                |
| fsdp     | FULL_SHARD, SHARD_GRAD_OP          | ``DataParallelType.fsdp``; SHARD_GRAD_OP = no reshard   |
|          |                                    | after forward (hook: launch.fsdp_hooks)                 |
| hsdp     | HYBRID_SHARD                       | ``DataParallelType.hsdp``, num_replicas x shard_degree  |

Every invalid combination is a one-line :class:`~olmo_exp.base.errors.ConfigError` from
:meth:`DistConfig.validate` (the group's own keys) or :func:`olmo_exp.config.topology.validate_world` (against
the world :func:`olmo_exp.config.topology.topology` resolved), raised in the launching process before any
rank starts. The config itself never reads the environment or the devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # olmo-core imports take seconds: keep them out of config composition
    from olmo_core.config import DType
    from olmo_core.train.train_module import (
        TransformerActivationCheckpointingConfig,
        TransformerDataParallelConfig,
    )



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


# shard_strategy values each strategy accepts; the first is what null means.
SHARD_STRATEGIES: dict[Strategy, tuple[ShardStrategy, ...]] = {
    Strategy.single: (),
    Strategy.ddp: (ShardStrategy.NO_SHARD,),
    Strategy.fsdp: (ShardStrategy.FULL_SHARD, ShardStrategy.SHARD_GRAD_OP),
    Strategy.hsdp: (ShardStrategy.HYBRID_SHARD,),
}
SHARDED = (Strategy.fsdp, Strategy.hsdp)


@dataclass
class DistConfig:
    strategy: Strategy = Strategy.single
    nproc_per_node: int | None = None
    """Ranks per node; null = what torchrun/SLURM started, else 1 for dist=single and every GPU of
    the node (1 on CPU) for ddp/fsdp/hsdp."""
    nodes: int = 1
    mixed_precision: bool | None = None
    """bf16 compute over fp32 master weights with fp32 gradient reduction; null = on with a GPU,
    off on CPU. fsdp/hsdp: FSDP2's bf16 param_dtype; single/ddp: olmo-core's bf16 autocast."""
    shard_strategy: ShardStrategy | None = None
    """null = the strategy's natural one (fsdp: FULL_SHARD, hsdp: HYBRID_SHARD, ddp: NO_SHARD)."""
    cpu_offload: bool = False
    """FSDP2 CPUOffloadPolicy for sharded params/grads/optimizer step (fsdp/hsdp only)."""
    wrapping_strategy: WrappingStrategy = WrappingStrategy.full
    """olmo-core's FSDP wrapping: full (blocks + embeddings + head), blocks, fine_grained."""
    prefetch_factor: int = 0
    """olmo-core's FSDP forward prefetch (blocks ahead); 0 = FSDP2's default."""
    num_replicas: int | None = None
    """HSDP replica groups; null = one per node (2 on a single node, so it has a replica dimension)."""
    shard_degree: int | None = None
    """HSDP ranks per replica (params sharded over them); null = world size / num_replicas."""
    activation_checkpointing: bool = False
    """olmo-core's full activation checkpointing (recompute every block in backward)."""
    compile: bool | None = None
    """null = on with a GPU, off on CPU (olmo-core only compiles on CUDA)."""
    timeout_s: int = 600
    """Process-group timeout: a dead or hung rank fails the job after this long."""

    # -- world --------------------------------------------------------------------------------

    @property
    def resolved_shard_strategy(self) -> ShardStrategy | None:
        if self.shard_strategy is not None:
            return self.shard_strategy
        allowed = SHARD_STRATEGIES[self.strategy]
        return allowed[0] if allowed else None

    def hsdp_degrees(self, world_size: int) -> tuple[int, int]:
        """(num_replicas, shard_degree) for HSDP, nulls filled in (validate_world() checks them)."""
        replicas = self.num_replicas
        if replicas is None:  # one per node; on one node two, so that it has a replica dimension
            replicas = (world_size // self.shard_degree if self.shard_degree
                        else self.nodes if self.nodes > 1 else 2)
        shard = self.shard_degree if self.shard_degree is not None else world_size // max(replicas, 1)
        return replicas, shard

    def param_shard_degree(self, world_size: int) -> int:
        """Ranks one parameter is split over: world (fsdp), shard_degree (hsdp), 1 (ddp/single)."""
        if self.strategy == Strategy.fsdp:
            return world_size
        if self.strategy == Strategy.hsdp:
            return self.hsdp_degrees(world_size)[1]
        return 1

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Every invalid combination of the group's own keys, as one ConfigError."""
        from olmo_exp.base.errors import ConfigError, non_negative, positive

        positive("dist.nodes", self.nodes)
        positive("dist.nproc_per_node", self.nproc_per_node, allow_none=True)
        positive("dist.timeout_s", self.timeout_s)
        positive("dist.num_replicas", self.num_replicas, allow_none=True)
        positive("dist.shard_degree", self.shard_degree, allow_none=True)
        non_negative("dist.prefetch_factor", self.prefetch_factor)
        strategy = self.strategy.value

        allowed = SHARD_STRATEGIES[self.strategy]
        if self.shard_strategy is not None and self.shard_strategy not in allowed:
            by_name = {s.value: k.value for k, v in SHARD_STRATEGIES.items() for s in v}
            hint = (f"; {self.shard_strategy.value} is dist.strategy={by_name[self.shard_strategy.value]}"
                    if self.shard_strategy.value in by_name else "")
            valid = "/".join(s.value for s in allowed) if allowed else "null"
            raise ConfigError("dist.shard_strategy", self.shard_strategy.value,
                              f"with dist.strategy={strategy} must be {valid} or null{hint}")
        if self.cpu_offload:
            if self.strategy not in SHARDED:
                raise ConfigError("dist.cpu_offload", True,
                                  f"needs dist.strategy=fsdp or hsdp (offloads shards), not {strategy}")
        if self.strategy not in SHARDED:
            if self.wrapping_strategy != WrappingStrategy.full:
                raise ConfigError("dist.wrapping_strategy", self.wrapping_strategy.value,
                                  f"only applies to dist.strategy=fsdp/hsdp, not {strategy}; leave it full")
            if self.prefetch_factor:
                raise ConfigError("dist.prefetch_factor", self.prefetch_factor,
                                  f"only applies to dist.strategy=fsdp/hsdp, not {strategy}; use 0")
        if self.activation_checkpointing and self.prefetch_factor:
            # olmo-core sets FSDP prefetch on the blocks, which AC has wrapped by then: every rank
            # fails at build ("Expects FSDPModule but got CheckpointWrapper").
            raise ConfigError("dist.prefetch_factor", self.prefetch_factor,
                              "must be 0 with dist.activation_checkpointing=true (olmo-core 3.0 "
                              "cannot prefetch checkpoint-wrapped blocks)")
        if self.strategy != Strategy.hsdp:
            for key in ("num_replicas", "shard_degree"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"dist.{key}", getattr(self, key),
                                      f"only applies to dist.strategy=hsdp, not {strategy}; use null")

    # -- olmo-core mapping --------------------------------------------------------------------

    def dp_config(self, world_size: int, on_gpu: bool) -> TransformerDataParallelConfig | None:
        """olmo-core's data-parallel config; SHARD_GRAD_OP and cpu_offload go through launch.fsdp_hooks()."""
        if self.strategy == Strategy.single:
            return None
        from olmo_core.config import DType
        from olmo_core.distributed.parallel import DataParallelType
        from olmo_core.train.train_module import (
            TransformerDataParallelConfig,
            TransformerDataParallelWrappingStrategy,
        )

        replicas, shard = self.hsdp_degrees(world_size) if self.strategy == Strategy.hsdp else (None, None)
        return TransformerDataParallelConfig(
            name=DataParallelType(self.strategy.value),
            # single/ddp get autocast instead (autocast_precision): olmo-core's DDP would cast
            # the replicas (weights, grads, AdamW state, all-reduce) to bf16 outright.
            param_dtype=DType.bfloat16 if self.strategy in SHARDED and self.mixed_precision_enabled(on_gpu)
            else None,
            reduce_dtype=DType.float32,
            num_replicas=replicas,
            shard_degree=shard,
            wrapping_strategy=TransformerDataParallelWrappingStrategy(self.wrapping_strategy.value),
            prefetch_factor=self.prefetch_factor,
        )

    def ac_config(self) -> TransformerActivationCheckpointingConfig | None:
        if not self.activation_checkpointing:
            return None
        from olmo_core.train.train_module import (
            TransformerActivationCheckpointingConfig,
            TransformerActivationCheckpointingMode,
        )

        return TransformerActivationCheckpointingConfig(mode=TransformerActivationCheckpointingMode.full)

    def mixed_precision_enabled(self, on_gpu: bool) -> bool:
        """null follows the device: bf16 on CUDA (2-3x faster, half the memory), fp32 on CPU."""
        return on_gpu if self.mixed_precision is None else self.mixed_precision

    def autocast_precision(self, on_gpu: bool) -> DType | None:
        """olmo-core's train-module autocast: how single/ddp get bf16 (fsdp/hsdp use param_dtype)."""
        if self.strategy in SHARDED or not self.mixed_precision_enabled(on_gpu):
            return None
        from olmo_core.config import DType

        return DType.bfloat16

    def precision(self, on_gpu: bool) -> str:
        """The resolved precision in words, for the run header and model_summary.json."""
        if not self.mixed_precision_enabled(on_gpu):
            return "fp32"
        return "bf16_params_fp32_reduce" if self.strategy in SHARDED else "bf16_autocast"

    def compile_enabled(self, on_gpu: bool) -> bool:
        # olmo-core skips compile without CUDA (with a warning): report what will really happen.
        return on_gpu if self.compile is None else bool(self.compile) and on_gpu

    def fsdp_overrides(self, on_gpu: bool) -> dict[str, Any]:
        """Extra ``fully_shard`` kwargs olmo-core does not expose; empty = olmo-core as is."""
        overrides: dict[str, Any] = {}
        if self.strategy not in SHARDED:
            return overrides
        if self.resolved_shard_strategy == ShardStrategy.SHARD_GRAD_OP:
            overrides["reshard_after_forward"] = False
        if self.cpu_offload:
            from torch.distributed.fsdp import CPUOffloadPolicy

            # pin_memory=True needs an accelerator ("Cannot access accelerator device").
            overrides["offload_policy"] = CPUOffloadPolicy(pin_memory=on_gpu)
        return overrides

