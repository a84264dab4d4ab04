"""The ``train`` group: olmo-core's train module, trainer and evaluator configs (and wandb's)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from olmo_exp.base.errors import ConfigError, non_negative, positive

if TYPE_CHECKING:
    from olmo_core.config import DType
    from olmo_core.optim.scheduler import Scheduler
    from olmo_core.train import TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback
    from olmo_core.train.train_module import (
        TransformerActivationCheckpointingConfig,
        TransformerDataParallelConfig,
        TransformerTrainModuleConfig,
    )

log = logging.getLogger(__name__)

C = TypeVar("C", bound="CheckpointerCallback")


BUDGET_KEYS = ("max_steps", "max_tokens")


def budget_given_alone(overrides: Sequence[str]) -> str | None:
    """The budget key (``max_steps`` or ``max_tokens``) that these overrides (a command line, or
    one sweep point's) set to a value while leaving the other alone: that budget replaces the
    preset's other one. None when neither or both are given (both: an error at validation)."""
    given: dict[str, str] = {}
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if sep and key.startswith("train.") and key[6:] in BUDGET_KEYS:
            given[key[6:]] = value.strip()  # the last one wins, as in Hydra
    values = [k for k, v in given.items() if v.lower() not in ("null", "none", "~", "")]
    if len(values) == 1 and len(given) == 1:
        return values[0]
    return None


def other_budget(key: str) -> str:
    return BUDGET_KEYS[1 - BUDGET_KEYS.index(key)]


def steps_for_tokens(max_tokens: int, global_batch_size: int, sequence_length: int) -> int:
    """Steps that train at least ``max_tokens`` (rounded up: a budget is a minimum, never cut)."""
    return ceil(max_tokens / (global_batch_size * sequence_length))


class ConsoleMode(str, Enum):
    compact = "compact"
    full = "full"


class InitKV(str, Enum):
    """How ``train.init_from``'s K and V projections become this model's."""

    exact = "exact"  # every tensor's shape must match the source's
    mean_pool = "mean_pool"  # fewer KV heads than the source: each group's heads averaged (GQA §2)


class Schedule(str, Enum):
    """olmo-core's LR schedulers (olmo_core/optim/scheduler.py): linear warmup, then a decay to
    ``alpha_f`` x lr over the run."""

    cosine = "cosine"  # CosWithWarmup
    linear = "linear"  # LinearWithWarmup


@dataclass
class TrainConfig:
    max_steps: int | None = 100
    """Optimizer steps; exactly one of max_steps and max_tokens is set (the other null). A budget
    given on the command line (or as a sweep axis) replaces the preset's other one."""
    max_tokens: int | None = None
    """Training budget in tokens: max_steps = ceil(max_tokens / (global_batch_size x
    data.sequence_length)), i.e. at least max_tokens are trained (RunConfig.validate resolves it)."""
    global_batch_size: int = 16
    """Sequences per optimizer step, over all ranks."""
    micro_batch_size: int | None = None
    """Sequences per forward/backward on one rank (gradient accumulation fills the rest);
    null = the whole per-rank batch (global_batch_size / world size), no accumulation."""
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay, on every parameter but the embeddings (olmo-core's recipes)."""
    scheduler: Schedule = Schedule.cosine
    warmup_steps: int = 10
    alpha_f: float = 0.1
    """The LR floor: the schedule decays to alpha_f x lr at the last step (0 = to zero)."""
    max_grad_norm: float = 1.0
    z_loss_multiplier: float | None = None
    """Weight of the z-loss (log^2 of the softmax normaliser), e.g. 1e-5; null = off."""
    checkpoint_interval: int = 50
    """Steps between permanent checkpoints; the final step is always saved. 0 = no checkpoints at
    all (benchmarks: a 1B model's final checkpoint is 16 GB of disk writes)."""
    ephemeral_checkpoint_interval: int | None = None
    """Steps between temporary checkpoints (for preemptible jobs): only the newest checkpoint of
    the run outlives the next save; must be below checkpoint_interval. null = none."""
    keep_last_checkpoints: int | None = 3
    """Permanent checkpoints kept (the newest; older ones are deleted as new ones are saved and at
    the end); null = keep all. 3 is olmo-core's default (CheckpointerCallback.max_checkpoints)."""
    num_workers: int = 0
    """Data-loader worker processes per rank (0 = load in the training process)."""
    eval_interval: int = 50
    """Steps between validation-loss evaluations (0 = off); validation also runs at the end."""
    eval_tokens: int = 16384
    """Validation tokens per evaluation: the first eval_tokens // data.sequence_length sequences
    of the validation split, the same text for every job whatever its micro-batch size or ranks
    (olmo_exp/build/eval.py). The split must hold that many."""
    log_interval: int = 5
    """Steps between metric collections (each one lands in metrics.jsonl)."""
    seed: int = 42
    stop_at_step: int | None = None
    """Stop early at this step (a resumable break, e.g. before a SLURM time limit); null = run to max_steps."""
    peak_tflops: float | None = None
    """The GPU's dense bf16 peak (TFLOP/s), the denominator of MFU; null = from the device name
    (olmo_exp/build/peaks.py). No MFU for fp32 runs, on CPU, or on a GPU the table lacks."""
    init_from: str | None = None
    """Start from other weights: a run directory (its latest checkpoint) or a Hugging Face OLMo-2
    directory. Step 0, a fresh optimizer and schedule; a run dir that already holds checkpoints
    resumes from them instead (the source is then not read). null = olmo-core's random init."""
    init_kv: InitKV = InitKV.exact
    """exact: init_from's tensors must have this model's shapes; mean_pool: a source with more KV
    heads (a multiple) is pooled into this model's, as in MHA -> GQA uptraining."""
    console: ConsoleMode = ConsoleMode.compact
    """compact: one line per logged step (a progress bar on a terminal); full: olmo-core's metrics
    block and log messages, module listing included (see olmo_exp/runtime/console.py)."""

    def validate(self) -> None:
        """Checks of this group alone; RunConfig.validate resolves max_tokens and a null
        micro_batch_size first (they need the sequence length and the world size)."""
        for key in ("max_steps", "global_batch_size", "micro_batch_size", "lr",
                    "log_interval", "eval_tokens"):
            positive(f"train.{key}", getattr(self, key))
        positive("train.peak_tflops", self.peak_tflops, allow_none=True)
        # warmup and intervals larger than the run are capped at max_steps (see capped()), so
        # that shortening a run needs no other edit; only values wrong on their own fail here.
        for key in ("weight_decay", "warmup_steps", "max_grad_norm", "eval_interval", "seed",
                    "checkpoint_interval", "num_workers", "alpha_f"):
            non_negative(f"train.{key}", getattr(self, key))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("train.betas", list(self.betas), "two numbers in [0, 1)")
        positive("train.eps", self.eps)
        if self.alpha_f > 1:
            raise ConfigError("train.alpha_f", self.alpha_f, "a fraction of train.lr in [0, 1]")
        non_negative("train.z_loss_multiplier", self.z_loss_multiplier or 0)
        positive("train.keep_last_checkpoints", self.keep_last_checkpoints, allow_none=True)
        positive("train.ephemeral_checkpoint_interval", self.ephemeral_checkpoint_interval,
                 allow_none=True)
        ephemeral = self.ephemeral_checkpoint_interval
        if ephemeral is not None and self.checkpoint_interval and ephemeral >= self.checkpoint_interval:
            # olmo-core's rule (CheckpointerCallback.__post_init__): permanent ones are the rarer.
            raise ConfigError("train.ephemeral_checkpoint_interval", ephemeral,
                              f"must be below train.checkpoint_interval={self.checkpoint_interval}, or null")
        if self.stop_at_step is not None and not 0 < self.stop_at_step <= self.max_steps:
            raise ConfigError("train.stop_at_step", self.stop_at_step,
                              f"must be null or in 1..train.max_steps={self.max_steps}")
        if self.init_from is not None and not str(self.init_from).strip():
            raise ConfigError("train.init_from", self.init_from,
                              "a run directory or a Hugging Face OLMo-2 directory, or null")
        if InitKV(self.init_kv) == InitKV.mean_pool and self.init_from is None:
            raise ConfigError("train.init_kv", InitKV.mean_pool.value,
                              "pools the KV heads of train.init_from's model: set train.init_from, "
                              "or train.init_kv=exact")
        if self.stop_at_step is not None and self.checkpoint_interval == 0:
            raise ConfigError("train.stop_at_step", self.stop_at_step,
                              "must be null with train.checkpoint_interval=0 (nothing to resume from)")

    def resolve(self, *, sequence_length: int, world_size: int) -> None:
        """Turn a token budget into steps and a null micro-batch into the per-rank batch (in place;
        idempotent, so a resolved config validates again). One ConfigError for a budget given
        twice or not at all."""
        if self.max_tokens is not None:
            positive("train.max_tokens", self.max_tokens)
            steps = steps_for_tokens(self.max_tokens, self.global_batch_size, sequence_length)
            if self.max_steps is not None and self.max_steps != steps:
                # A budget on the command line replaces the preset's other one; both given is this.
                raise ConfigError(
                    "train.max_tokens", self.max_tokens,
                    f"give exactly one of train.max_steps ({self.max_steps}) and train.max_tokens, "
                    "not both",
                )
            self.max_steps = steps
        elif self.max_steps is None:
            raise ConfigError("train.max_steps", None,
                              "give exactly one of train.max_steps and train.max_tokens")
        if self.micro_batch_size is None:
            if self.global_batch_size % world_size:
                raise ConfigError(
                    "train.global_batch_size", self.global_batch_size,
                    f"must be a multiple of the world size {world_size} "
                    "(train.micro_batch_size=null: each rank's whole share)",
                )
            self.micro_batch_size = self.global_batch_size // world_size

    def capped(self, key: str) -> int:
        """``train.<key>`` (warmup or an interval) as this run uses it: at most ``max_steps``;
        an interval of 0 (off) stays 0."""
        assert self.max_steps is not None, "resolve() first"
        return min(getattr(self, key), self.max_steps)

    def scheduler_config(self) -> Scheduler:
        """olmo-core's scheduler: linear warmup, then cosine or linear decay to alpha_f x lr."""
        from olmo_core.optim import CosWithWarmup, LinearWithWarmup

        kind = CosWithWarmup if Schedule(self.scheduler) == Schedule.cosine else LinearWithWarmup
        return kind(warmup=self.capped("warmup_steps"), alpha_f=self.alpha_f)

    def train_module_config(
        self, *, sequence_length: int, dp_config: TransformerDataParallelConfig | None = None,
        autocast_precision: DType | None = None,
        ac_config: TransformerActivationCheckpointingConfig | None = None, compile_model: bool = False,
    ) -> TransformerTrainModuleConfig:
        """olmo-core's train module: AdamW + warmup/decay schedule (+ z-loss); the parallelism
        and precision arguments are what the dist group built (the worker wires them), default one
        plain process. Call on a resolved config (RunConfig.validate)."""
        from olmo_core.optim import AdamWConfig, OptimGroupOverride
        from olmo_core.train.train_module import TransformerTrainModuleConfig

        assert self.micro_batch_size is not None, "resolve() first"
        return TransformerTrainModuleConfig(
            rank_microbatch_size=self.micro_batch_size * sequence_length,  # tokens
            max_sequence_length=sequence_length,
            optim=AdamWConfig(
                lr=self.lr,
                betas=(float(self.betas[0]), float(self.betas[1])),
                eps=self.eps,
                weight_decay=self.weight_decay,
                # No decay on embeddings, as in olmo-core's OLMo-2 recipes.
                group_overrides=[
                    OptimGroupOverride(params=["embeddings.weight"], opts=dict(weight_decay=0.0))
                ],
            ),
            scheduler=self.scheduler_config(),
            max_grad_norm=self.max_grad_norm,
            z_loss_multiplier=self.z_loss_multiplier or None,
            compile_model=compile_model,
            dp_config=dp_config,
            autocast_precision=autocast_precision,
            ac_config=ac_config,
        )

    def trainer_config(self, *, run_dir: Path, callbacks: dict[str, Any],
                       on_gpu: bool = False) -> TrainerConfig:
        """olmo-core's trainer: checkpoints in run_dir/checkpoints, resumed from there when present.
        ``callbacks`` are the run's own (the worker's speed monitor with its MFU peak among them)."""
        from olmo_core.train import Duration, TrainerConfig
        from olmo_core.train.callbacks import (
            CheckpointerCallback,
            ConsoleLoggerCallback,
            GPUMemoryMonitorCallback,
        )

        stock = {
            "checkpointer": self.checkpointer(CheckpointerCallback),
            "console": ConsoleLoggerCallback(log_interval=self.log_interval),
        }
        if on_gpu:  # peak GPU memory per step ("gpu_memory/..." metrics)
            stock["gpu_memory"] = GPUMemoryMonitorCallback()
        return TrainerConfig(
            save_folder=str(run_dir / "checkpoints"),
            work_dir=str(run_dir / "trainer-work"),
            max_duration=Duration.steps(self.max_steps),
            hard_stop=Duration.steps(self.stop_at_step) if self.stop_at_step else None,
            metrics_collect_interval=self.log_interval,
            cancel_check_interval=max(self.log_interval, 10),
            callbacks={**stock, **callbacks},
        )

    def checkpointer(self, cls: type[C]) -> C:
        """olmo-core's checkpointer settings (``cls``: CheckpointerCallback or a subclass)."""
        interval = self.capped("checkpoint_interval")
        ephemeral = self.ephemeral_checkpoint_interval
        if ephemeral is not None and interval and ephemeral >= interval:
            ephemeral = None  # the permanent interval was capped at a short run's length
        return cls(
            # 0 = no checkpoints (benchmarks); otherwise capped at the run's length.
            save_interval=interval or None,
            ephemeral_save_interval=ephemeral,
            max_checkpoints=self.keep_last_checkpoints,
            enabled=self.checkpoint_interval > 0,
            save_async=False,
            # An lr=0 step-0 checkpoint perturbs the optimizer state: skip it.
            pre_train_checkpoint=False,
        )

    def eval_schedule(self) -> tuple[int, bool]:
        """(eval_interval as this run uses it, whether to evaluate once more at the last step):
        every evaluator runs every eval_interval steps and at the end."""
        interval = self.capped("eval_interval")
        if interval == 0:  # off
            return 0, False
        return interval, (self.stop_at_step or self.max_steps) % interval != 0
