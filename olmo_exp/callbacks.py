"""olmo-core trainer callbacks that write a run's files and metrics, and the sampling loop behind
``generations.jsonl``.

Kept apart from the config modules (``train``, ``dist``, ``generate``), which must compose and
validate without importing olmo-core's training stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from olmo_core.distributed.utils import (
    all_reduce_value,
    broadcast_object,
    get_rank,
    get_world_size,
    is_distributed,
)
from olmo_core.train.callbacks import Callback, ConsoleLoggerCallback
from olmo_core.train.common import ReduceType
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule
from torch.distributed.tensor import DTensor

from olmo_exp import slurm
from olmo_exp.console import StepConsole
from olmo_exp.files import read_jsonl, write_jsonl_atomic
from olmo_exp.generate import GenerateConfig
from olmo_exp.train import WandbConfig

log = logging.getLogger(__name__)


def truncate_to_step(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the records up to ``step`` (the checkpoint training restarts from), drop the rest.

    A run killed after step N and resumed from checkpoint C < N trains C+1..N again; without this
    those steps would be recorded twice. Returns the records kept.
    """
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    if path.exists() and len(path.read_text().splitlines()) != len(kept):  # dropped or torn
        write_jsonl_atomic(path, kept)
    return kept


@dataclass
class MetricsFileCallback(Callback):
    """Writes one JSON object per logged step (olmo-core's metric names) to ``metrics.jsonl``, rank 0.

    The file is the truth at every moment (a kill leaves whole records): a step's record is appended
    when the step is first logged; olmo-core may log one step again (eval or checkpoint metrics
    after the step's own, the restored step after a resume), and those are merged into the step's
    record by an atomic rewrite. At the start of training, records past the step training starts
    from are dropped (they are trained and logged again).
    """

    path: Path = field(default_factory=lambda: Path("metrics.jsonl"))
    _records: list[dict[str, Any]] = field(default_factory=list)

    def pre_train(self) -> None:
        if get_rank() == 0:
            self._records = truncate_to_step(self.path, self.trainer.global_step)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if get_rank() != 0:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._records and self._records[-1].get("step") == step:
            self._records[-1].update(values, wall_time=time.time())
            write_jsonl_atomic(self.path, self._records)
            return
        record = {"step": step, **values, "wall_time": time.time()}
        self._records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")  # one write: whole, or torn and dropped on resume


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


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no grad, and under FSDP one all-gather for the whole sample instead of one per token."""
    was_training = model.training
    fsdp_modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # FSDP2 has a setter but no getter for reshard-after-forward; save the exact per-group state so
    # that SHARD_GRAD_OP (no reshard) and olmo-core's unsharded head survive sampling unchanged.
    saved = []
    for m in fsdp_modules:
        state = m._get_fsdp_state()
        groups = [(g, g.post_forward_mesh_info) for g in state._fsdp_param_groups]
        saved.append((state, state._auto_reshard_after_forward, groups))
    model.eval()
    for m in fsdp_modules:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        # no_grad, not inference_mode: inference tensors (RoPE cache) would break later backward passes.
        with torch.no_grad():
            yield
    finally:
        for state, auto, groups in saved:
            state._auto_reshard_after_forward = auto
            for group, mesh_info in groups:
                group.post_forward_mesh_info = mesh_info
        for m in fsdp_modules:
            m.reshard()  # free the gathered weights; training gathers what it needs
        model.train(was_training)


def generate_ids(
    model: torch.nn.Module,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    eos_token_id: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> list[int]:
    """Greedy (or temperature) decoding, called on every rank; returns the same tokens on each.

    Under several ranks, rank 0 decides each token and broadcasts it: ranks computing their own
    argmax could pick different tokens (a bf16 tie on GPUs) or stop at different lengths (an EOS
    one rank sees), leaving them in different collectives, i.e. hung. Sampling draws from its own
    generator, leaving the training RNG state untouched.
    """
    lockstep = is_distributed() and get_world_size() > 1

    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    new: list[int] = []
    with _inference(model):
        for _ in range(max_new_tokens):
            logits = model(ids, logits_to_keep=1)[:, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            else:
                nxt = logits.argmax(dim=-1, keepdim=True)
            if lockstep:
                dist.broadcast(nxt, src=0)  # on the model's device: what the backend expects
            token = int(nxt.item())
            new.append(token)
            if token == eos_token_id:
                break
            ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
    return new


@dataclass
class GenerationCallback(Callback):
    """Samples text every ``generate.interval`` steps and at the end, into ``generations.jsonl``.

    Runs before the checkpointer (priority 2 > 1): a step's sample is on disk before its
    checkpoint, so a run resumed from any checkpoint finds the samples up to it and (after the
    records past it are dropped) writes each later one once.
    """

    priority: ClassVar[int] = 2
    config: GenerateConfig = field(default_factory=GenerateConfig)
    tokenizer: Any = None
    """Anything with ``encode(text) -> list[int]`` and ``decode(ids) -> str``."""
    eos_token_id: int | None = None
    path: Path = field(default_factory=lambda: Path("generations.jsonl"))
    _last_step: int = -1

    def pre_train(self) -> None:
        sampled_at_start = False
        if get_rank() == 0:
            start = self.trainer.global_step
            kept = truncate_to_step(self.path, start)
            sampled_at_start = bool(kept) and kept[-1].get("step") == start
        # Every rank must agree: sampling is collective under FSDP.
        if broadcast_object(sampled_at_start):
            self._last_step = self.trainer.global_step  # resumed after the end: don't sample again

    def post_step(self) -> None:
        if self.config.interval > 0 and self.step % self.config.interval == 0:
            self.sample()

    def post_train(self) -> None:
        # A canceled run (time-limit signal, SIGTERM) resumes later: no sample in its grace time.
        if self.step != self._last_step and not self.trainer.is_canceled:
            self.sample()

    def sample(self) -> str:
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
        slurm.set_phase("training")

    def post_train(self) -> None:
        slurm.set_phase("done")

    def post_step(self) -> None:
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


# -- console ----------------------------------------------------------------------------------


@dataclass
class ConsoleCallback(ConsoleLoggerCallback):
    """One line per logged step on rank 0 (see :mod:`olmo_exp.console`), in place of olmo-core's
    metrics block; a subclass so that olmo-core does not add its own console logger."""

    world_size: int = 1
    progress_bar: bool = False
    _view: StepConsole | None = None
    _trained: bool = False

    def pre_train(self) -> None:
        if get_rank() != 0:
            return
        trainer = self.trainer
        self._view = StepConsole(total_steps=trainer.max_steps or 0, world_size=self.world_size,
                                 progress_bar=self.progress_bar)
        loaded = trainer.checkpoint_loaded and trainer.global_step > 0
        self._view.start(trainer.global_step,
                         checkpoint=f"{trainer.save_folder}/step{trainer.global_step}" if loaded
                         else None)

    def post_step(self) -> None:
        pass  # olmo-core's progress marker between logged steps: the step lines say it all

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._view is not None:
            self._view.log_metrics(step, metrics)

    def post_train(self) -> None:
        self._trained = True  # the end line waits for close(): after the final generation, eval

    def close(self) -> None:
        if self._view is not None:
            if self._trained:
                self._view.finish()
            else:  # training failed: close the bar, no "finished" line
                self._view.close_bar()
            self._view = None
