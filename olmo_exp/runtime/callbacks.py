"""olmo-core trainer callbacks that write a run's files and metrics (``metrics.jsonl``, wandb, the
console line, per-rank state bytes) and stop a run on a signal (time limit, Ctrl-C, kill).

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
from typing import Any, ClassVar

import torch
from olmo_core.distributed.utils import (
    all_reduce_value,
    get_rank,
    get_world_size,
    is_distributed,
)
from olmo_core.train.callbacks import (
    Callback,
    ConsoleLoggerCallback,
    EvaluatorCallback,
    SpeedMonitorCallback,
)
from olmo_core.train.common import ReduceType
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule
from torch.distributed.tensor import DTensor

from olmo_exp.base.files import truncate_to_step, write_jsonl_atomic
from olmo_exp.config.wandb import WandbConfig
from olmo_exp.runtime import preemption
from olmo_exp.runtime.console import STEP_TIME, STEP_TOKENS, StepConsole, logged_step

log = logging.getLogger(__name__)


@dataclass
class MetricsFileCallback(Callback):
    """Writes one JSON object per logged step (olmo-core's metric names) to ``metrics.jsonl``, rank 0.

    Logged steps (:func:`olmo_exp.runtime.console.logged_step`): every ``train.log_interval``-th
    step (olmo-core's ``metrics_collect_interval``), every step with evaluation metrics, every
    checkpointed step and the last step trained. olmo-core hands over every step's metrics; those
    of the steps in between are not written, except their training time and tokens
    (``STEP_TIME``/``STEP_TOKENS``), which are summed into the next record: summed over the file,
    they are the run's training time and tokens. ``wall_time`` is when the step ended.

    The file is the truth at every moment (a kill leaves whole records): a step's record is appended
    when the step is first logged; olmo-core may log one step again (eval or checkpoint metrics
    after the step's own, the restored step after a resume), and those are merged into the step's
    record by an atomic rewrite. At the start of training, records past the step training starts
    from are dropped (they are trained and logged again).
    """

    path: Path = field(default_factory=lambda: Path("metrics.jsonl"))
    _records: list[dict[str, Any]] = field(default_factory=list)
    _ended: dict[int, float] = field(default_factory=dict)
    _pending: tuple[int, dict[str, float]] | None = None
    """The latest step not written yet, with the training time and tokens summed since the last
    record."""

    def pre_train(self) -> None:
        self._ended.clear()
        self._pending = None
        if get_rank() == 0:
            self._records = truncate_to_step(self.path, self.trainer.global_step)

    def post_step(self) -> None:
        self._ended[self.step] = time.time()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if get_rank() != 0:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._records and self._records[-1].get("step") == step:
            # More of this step's metrics, arriving late (evaluation; or, when a checkpoint save
            # flushed the metrics halfway through the step, the rest of the step's own).
            last = self._records[-1]
            for key in (STEP_TIME, STEP_TOKENS):
                if key in values and key in last:
                    values[key] += last[key]
            last.update(values)
            write_jsonl_atomic(self.path, self._records)
            return
        if self._pending is not None:  # the steps in between: their training time and tokens
            for key in (STEP_TIME, STEP_TOKENS):
                if key in self._pending[1]:
                    values[key] = values.get(key, 0.0) + self._pending[1][key]
        self._pending = (step, values)
        interval = self.trainer.metrics_collect_interval
        if logged_step(step, metrics, interval):
            self._write_pending()

    def post_checkpoint_saved(self, path: Any) -> None:
        # A resume starts at the checkpoint's step: its record holds the steps trained up to it.
        if self._pending is not None and self._pending[0] == self.step:
            self._write_pending()

    def post_train(self) -> None:
        self._write_pending()  # the last step trained, when it falls between log intervals

    def _write_pending(self) -> None:
        if get_rank() != 0 or self._pending is None:
            return
        step, values = self._pending
        self._pending = None
        ended = self._ended.pop(step, None) or time.time()
        self._ended = {s: t for s, t in self._ended.items() if s > step}
        record = {"step": step, **values, "wall_time": ended}
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

        self._run = wandb.init(
            project=self.config.project, entity=self.config.entity, group=self.config.group,
            name=self.run_name, tags=list(self.config.tags) or None, config=self.run_config,
            mode=self.config.mode.value,
            dir=str(self.run_dir), **self.init_kwargs(self.trainer.global_step),
        )

    def init_kwargs(self, step: int) -> dict[str, str]:
        """Which wandb run, and from where: one wandb run per run dir (a new id the first time, never
        another sweep's run with the same job number). An earlier attempt of this run dir (crash,
        requeue) may have logged steps past its last checkpoint: ``resume_from`` rewinds the wandb
        run to ``step``, the step training resumes after (checkpoint loaded), so those steps are
        replaced instead of dropped as non-monotonic (``resume="allow"`` would keep the stale ones)."""
        id_file = self.run_dir / "wandb_run_id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
            return {"id": id_file.read_text().strip(), "resume": "allow"}
        return {"resume_from": f"{id_file.read_text().strip()}?_step={step}"}

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._run is not None:
            self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None




@dataclass
class TrainStepTimer(Callback):
    """Each step's training time alone (forward, backward, optimizer step; no evaluation,
    generation, checkpointing or logging, which olmo-core's per-step TPS counts) and the tokens
    this rank trained in it, recorded per step into ``metrics.jsonl``. The sweep report sums them
    over the file's records, so tokens/s and training time continue across requeues. Callbacks
    run by priority, highest first; the checkpointer (1) saves in ``post_train_batch``: this one
    stops its clock before any other's."""

    priority: ClassVar[int] = 100

    _start: float = 0.0
    _tokens: int = 0

    def pre_step(self, batch: dict[str, Any]) -> None:
        ids = batch.get("input_ids")
        self._tokens = int(ids.numel()) if ids is not None else 0
        self._start = time.perf_counter()

    def post_train_batch(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the step's kernels are done, not only launched
        elapsed = time.perf_counter() - self._start
        self.trainer.record_metric(STEP_TIME, elapsed, ReduceType.max)
        self.trainer.record_metric(STEP_TOKENS, float(self._tokens))


@dataclass
class StopOnSignalCallback(Callback):
    """Stops training on every rank after the same step once a stop signal came: the time limit's
    or a preemption's (sweep jobs), SIGINT or SIGTERM (every run; see
    :mod:`olmo_exp.runtime.preemption`).

    The signal reaches the ranks at different moments (or only some of them): after each step the
    ranks agree (max of a flag over the job) and all cancel the run together, so olmo-core's
    checkpointer saves that very step in ``post_train`` and the resumed run loses nothing. What
    would run after training besides the save is called off: the final evaluation (it is not on
    the schedule, and its time would come out of the grace time before the kill) and sampling.
    """

    def pre_train(self) -> None:
        preemption.set_phase("training")
        preemption.install_stop_handlers()  # over olmo-core's, which fit() installed just now

    def post_train(self) -> None:
        preemption.set_phase("done")

    def post_step(self) -> None:
        signaled = 1 if preemption.signal_received() else 0
        if is_distributed() and get_world_size() > 1:
            signaled = int(all_reduce_value(signaled, torch.device("cpu"),
                                            op=torch.distributed.ReduceOp.MAX))
        if signaled:
            log.warning("%s: stopping at step %d to checkpoint it",
                        preemption.signal_received() or "stop signal on another rank", self.step)
            for callback in self.trainer.callbacks.values():
                if isinstance(callback, EvaluatorCallback):
                    callback.eval_on_finish = False  # evaluations on their schedule only
            self.trainer.cancel_run("stop signal", no_sync=True)  # sampling: GenerationCallback


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
        for m in model.blocks.modules()  # the blocks, or their parts (fine_grained wrapping)
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


def human_bytes(n: float) -> str:
    """``1.5 GiB``, ``12.3 MiB``, ``512 B``: binary units, three significant digits or so."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


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
            if is_distributed():  # one plain process: nothing sharded, nothing to say
                log.info("dist: params + optimizer state %s on this rank, %s unsharded (%.3fx); %s",
                         human_bytes(local), human_bytes(total), local / total,
                         describe_sharding(module.model))  # type: ignore[attr-defined]
        local, total = self._bytes
        self.trainer.record_metric("dist/rank_state_bytes", float(local), ReduceType.max)
        self.trainer.record_metric("dist/unsharded_state_bytes", float(total))


# -- console ----------------------------------------------------------------------------------


@dataclass
class ConsoleCallback(ConsoleLoggerCallback):
    """One line per logged step on rank 0 (see :mod:`olmo_exp.runtime.console`), in place of olmo-core's
    metrics block; a subclass so that olmo-core does not add its own console logger."""

    world_size: int = 1
    progress_bar: bool = False
    start_from: str | None = None
    """Where a fresh run's weights came from (train.init_from); None = a random init."""
    _view: StepConsole | None = None
    _trained: bool = False
    _ended: dict[int, float] = field(default_factory=dict)

    def pre_train(self) -> None:
        if get_rank() != 0:
            return
        trainer = self.trainer
        self._view = StepConsole(total_steps=trainer.max_steps or 0, world_size=self.world_size,
                                 progress_bar=self.progress_bar,
                                 log_interval=trainer.metrics_collect_interval)
        loaded = trainer.checkpoint_loaded and trainer.global_step > 0
        self._view.start(trainer.global_step,
                         checkpoint=f"{trainer.save_folder}/step{trainer.global_step}" if loaded
                         else None, start_from=self.start_from)

    def post_step(self) -> None:
        # When the step ended: its line carries that time, whenever olmo-core passes its metrics on.
        # (olmo-core's own progress marker between logged steps is not shown.)
        self._ended[self.step] = time.time()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._view is not None:
            # A step not over yet (metrics flushed by a checkpoint save inside it): now.
            self._view.log_metrics(step, metrics, ended=self._ended.get(step, time.time()))
            self._ended = {s: t for s, t in self._ended.items() if s >= step}

    def post_train(self) -> None:
        if self._view is not None:
            self._view.show_last_step()
        # The end line waits for close() (after the final generation, eval); "finished" only when
        # training reached its budget: a stopped run says where it stopped (the worker).
        trainer = self.trainer
        self._trained = not trainer.is_canceled and trainer.global_step >= (trainer.max_steps or 0)

    def close(self) -> None:
        if self._view is not None:
            if self._trained:
                self._view.finish()
            else:  # training failed: close the bar, no "finished" line
                self._view.close_bar()
            self._view = None


@dataclass
class SpeedMonitor(SpeedMonitorCallback):
    """olmo-core's speed monitor with the MFU peak decided here (olmo_exp/build/peaks.py): a
    ``device_peak_flops_per_second`` of None means no MFU, never olmo-core's fallback, which takes
    every GPU it doesn't know for an A100 (an H200's MFU would read 3.2x too high)."""

    def pre_train(self) -> None:
        peak = self.device_peak_flops_per_second
        super().pre_train()
        self.device_peak_flops_per_second = peak
