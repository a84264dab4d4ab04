"""olmo-core trainer callbacks that write a run's files and metrics.

Kept apart from the config modules (``train``, ``dist``, ``generate``), which must compose and
validate without importing olmo-core's training stack.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_core.train.callbacks import Callback
from olmo_core.train.common import ReduceType

from olmo_exp.generate import GenerateConfig, generate_ids
from olmo_exp.train import WandbConfig

log = logging.getLogger(__name__)


@dataclass
class MetricsFileCallback(Callback):
    """Writes one JSON object per logged step (olmo-core's metric names) to ``metrics.jsonl``, rank 0.

    olmo-core may log one step several times (e.g. eval or checkpoint metrics after the step's own);
    those are merged into the step's single record.
    """

    path: Path = field(default_factory=lambda: Path("metrics.jsonl"))
    extra: dict[str, Any] = field(default_factory=dict)
    """Merged into the first record of this process (e.g. per-rank memory)."""
    _pending: dict[str, Any] | None = None
    _started: bool = False

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from olmo_core.distributed.utils import get_rank

        if get_rank() != 0:
            return
        if self._pending is not None and self._pending["step"] != step:
            self._flush()
        if self._pending is None:
            first = self._take_last_record(step) if not self._started else {}
            self._started = True
            self._pending = {**first, "step": step, **self.extra}
            self.extra = {}
        self._pending.update({k: float(v) for k, v in metrics.items()})
        self._pending["wall_time"] = time.time()

    def _take_last_record(self, step: int) -> dict[str, Any]:
        """A resumed run logs its first step (the checkpoint's) again: merge into that record."""
        if not self.path.exists():
            return {}
        lines = self.path.read_text().splitlines(keepends=True)
        if not lines or json.loads(lines[-1]).get("step") != step:
            return {}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(lines[:-1]))
        tmp.replace(self.path)
        return json.loads(lines[-1])

    def _flush(self) -> None:
        if self._pending is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(self._pending) + "\n")
            self._pending = None

    def close(self) -> None:
        self._flush()


@dataclass
class WandbLogCallback(Callback):
    """Plain ``wandb.log`` from rank 0 (olmo-core's WandBCallback fails at finish with wandb >= 0.29)."""

    config: WandbConfig = field(default_factory=WandbConfig)
    run_dir: Path = field(default_factory=Path)
    """wandb's own files (offline runs included) go under run_dir/wandb."""
    run_name: str = ""
    run_config: dict[str, Any] = field(default_factory=dict)
    _run: Any = None

    def pre_train(self) -> None:
        from olmo_core.distributed.utils import get_rank

        if get_rank() != 0:
            return
        import wandb

        # One wandb run per run dir: a new id the first time, the same one when the run dir
        # resumes (a requeued job), never another sweep's run with the same job number.
        id_file = self.run_dir / "wandb_run_id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        self._run = wandb.init(
            project=self.config.project, entity=self.config.entity, group=self.config.group,
            name=self.run_name, config=self.run_config, mode=self.config.mode.value,
            resume="allow", id=id_file.read_text().strip(), dir=str(self.run_dir),
        )

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._run is not None:
            self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


@dataclass
class GenerationCallback(Callback):
    config: GenerateConfig = field(default_factory=GenerateConfig)
    tokenizer: Any = None
    """Anything with ``encode(text) -> list[int]`` and ``decode(ids) -> str``."""
    eos_token_id: int | None = None
    path: Path = field(default_factory=lambda: Path("generations.jsonl"))
    _last_step: int = -1

    def post_step(self) -> None:
        if self.config.interval > 0 and self.step % self.config.interval == 0:
            self.sample()

    def post_train(self) -> None:
        # A canceled run (time-limit signal, SIGTERM) resumes later: no sample in its grace time.
        if self.step != self._last_step and not self.trainer.is_canceled:
            self.sample()

    def sample(self) -> str:
        from olmo_core.distributed.utils import get_rank

        self._last_step = self.step
        model = self.trainer.train_module.model
        new = generate_ids(
            model,
            self.tokenizer.encode(self.config.prompt),
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            eos_token_id=self.eos_token_id,
            seed=self.step,
            device=self.trainer.device,
        )
        if new and new[-1] == self.eos_token_id:
            new = new[:-1]
        text = self.tokenizer.decode(new)
        if get_rank() == 0:
            log.info("[generation step %d] %s%s", self.step, self.config.prompt, text)
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": self.step, "prompt": self.config.prompt,
                                    "text": text}) + "\n")
        return text


@dataclass
class RequeueCallback(Callback):
    """Stops training on every rank after the same step once the time-limit/preemption signal came.

    The signal reaches the ranks at different moments (or only some of them): after each step the
    ranks agree (max of a flag over the job) and all cancel the run together, so olmo-core's
    checkpointer saves that very step in ``post_train`` and the requeued job loses nothing.
    """

    def pre_train(self) -> None:
        from olmo_exp import slurm

        slurm.set_phase("training")

    def post_train(self) -> None:
        from olmo_exp import slurm

        slurm.set_phase("done")

    def post_step(self) -> None:
        import torch
        from olmo_core.distributed.utils import all_reduce_value, get_world_size, is_distributed

        from olmo_exp import slurm

        signaled = 1 if slurm.signal_received() else 0
        if is_distributed() and get_world_size() > 1:
            signaled = int(all_reduce_value(signaled, torch.device("cpu"),
                                            op=torch.distributed.ReduceOp.MAX))
        if signaled:
            log.warning("time-limit/preemption signal: stopping at step %d to checkpoint it",
                        self.step)
            self.trainer.cancel_run("time-limit/preemption signal", no_sync=True)


# -- memory accounting ------------------------------------------------------------------------


def _local_and_global_bytes(t: Any) -> tuple[int, int]:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        local = t.to_local()
        return local.numel() * local.element_size(), t.numel() * t.element_size()
    n = t.numel() * t.element_size()
    return n, n


def state_bytes(model: Any, optim: Any) -> tuple[int, int]:
    """(bytes this rank holds, bytes one unsharded copy holds) of parameters + optimizer state.

    FSDP params and their AdamW state are DTensors: the local shard vs. the global tensor. Under
    DDP/single both numbers are equal (every rank holds everything).
    """
    import torch

    local = total = 0
    for p in model.parameters():
        lo, gl = _local_and_global_bytes(p)
        local, total = local + lo, total + gl
    for state in optim.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                lo, gl = _local_and_global_bytes(v)
                local, total = local + lo, total + gl
    return local, total



def describe_sharding(model: Any) -> str:
    """What FSDP2 really applied to the transformer blocks (proof that the hooks took effect)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule

    groups = [
        m._get_fsdp_state()._fsdp_param_group
        for m in model.blocks.values()
        if isinstance(m, FSDPModule) and m._get_fsdp_state()._fsdp_param_group is not None
    ]
    if not groups:
        return "blocks not FSDP-sharded"
    reshard = sorted({g.post_forward_mesh_info is not None for g in groups})
    offload = sorted({isinstance(g.offload_policy, CPUOffloadPolicy) for g in groups})
    mesh = groups[0].mesh_info.mesh
    return (f"FSDP2 blocks: mesh {tuple(mesh.shape)} {mesh.mesh_dim_names}, "
            f"reshard_after_forward={'/'.join(map(str, reshard))}, "
            f"cpu_offload={'/'.join(map(str, offload))}")


@dataclass
class DistMemoryCallback(Callback):
    """Records per-rank vs. unsharded parameter + optimizer-state bytes as ``dist/*`` metrics.

    ``dist/rank_state_bytes``: the most any rank holds; ``dist/unsharded_state_bytes``: what one
    process holding everything needs. Measured once after the first optimizer step (AdamW state
    exists from then on), recorded every step so each metrics.jsonl record carries them, and
    written once to the run log.
    """

    _bytes: tuple[int, int] | None = None

    def post_step(self) -> None:
        if self._bytes is None:
            module = self.trainer.train_module
            self._bytes = state_bytes(module.model, module.optim)  # type: ignore[attr-defined]
            local, total = self._bytes
            log.info("dist: params + optimizer state %d bytes on this rank, %d unsharded (%.3fx); %s",
                     local, total, local / total, describe_sharding(module.model))  # type: ignore[attr-defined]
        local, total = self._bytes
        self.trainer.record_metric("dist/rank_state_bytes", float(local), ReduceType.max)
        self.trainer.record_metric("dist/unsharded_state_bytes", float(total))
