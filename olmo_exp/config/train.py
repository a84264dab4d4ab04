"""The ``train`` group: olmo-core's train module, trainer and evaluator configs (and wandb's)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError, non_negative, positive

if TYPE_CHECKING:
    from olmo_core.config import DType
    from olmo_core.train import TrainerConfig
    from olmo_core.train.train_module import (
        TransformerActivationCheckpointingConfig,
        TransformerDataParallelConfig,
        TransformerTrainModuleConfig,
    )

log = logging.getLogger(__name__)


class ConsoleMode(str, Enum):
    compact = "compact"
    full = "full"


@dataclass
class TrainConfig:
    max_steps: int = 100
    global_batch_size: int = 16
    """Sequences per optimizer step, over all ranks."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on one rank (gradient accumulation fills the rest)."""
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    checkpoint_interval: int = 50
    """Steps between checkpoints; the final step is always saved. 0 = no checkpoints at all
    (benchmarks: a 1B model's final checkpoint is 16 GB of disk writes)."""
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
    console: ConsoleMode = ConsoleMode.compact
    """compact: one line per logged step (a progress bar on a terminal); full: olmo-core's metrics
    block and log messages, module listing included (see olmo_exp/runtime/console.py)."""

    def validate(self) -> None:
        for key in ("max_steps", "global_batch_size", "micro_batch_size", "lr",
                    "log_interval", "eval_tokens"):
            positive(f"train.{key}", getattr(self, key))
        positive("train.peak_tflops", self.peak_tflops, allow_none=True)
        # warmup and intervals larger than the run are capped at max_steps (see capped()), so
        # that shortening a run needs no other edit; only values wrong on their own fail here.
        for key in ("weight_decay", "warmup_steps", "max_grad_norm", "eval_interval", "seed",
                    "checkpoint_interval"):
            non_negative(f"train.{key}", getattr(self, key))
        if self.stop_at_step is not None and not 0 < self.stop_at_step <= self.max_steps:
            raise ConfigError("train.stop_at_step", self.stop_at_step,
                              f"must be null or in 1..train.max_steps={self.max_steps}")
        if self.stop_at_step is not None and self.checkpoint_interval == 0:
            raise ConfigError("train.stop_at_step", self.stop_at_step,
                              "must be null with train.checkpoint_interval=0 (nothing to resume from)")

    def capped(self, key: str) -> int:
        """``train.<key>`` (warmup or an interval) as this run uses it: at most ``max_steps``;
        an interval of 0 (off) stays 0."""
        return min(getattr(self, key), self.max_steps)

    def train_module_config(
        self, *, sequence_length: int, dp_config: TransformerDataParallelConfig | None = None,
        autocast_precision: DType | None = None,
        ac_config: TransformerActivationCheckpointingConfig | None = None, compile_model: bool = False,
    ) -> TransformerTrainModuleConfig:
        """olmo-core's train module: AdamW + cosine schedule; the parallelism and precision
        arguments are what the dist group built (experiment.py wires them), default one plain process."""
        from olmo_core.optim import AdamWConfig, CosWithWarmup, OptimGroupOverride
        from olmo_core.train.train_module import TransformerTrainModuleConfig

        return TransformerTrainModuleConfig(
            rank_microbatch_size=self.micro_batch_size * sequence_length,  # tokens
            max_sequence_length=sequence_length,
            optim=AdamWConfig(
                lr=self.lr,
                betas=(0.9, 0.95),
                weight_decay=self.weight_decay,
                # No decay on embeddings, as in olmo-core's OLMo-2 recipes.
                group_overrides=[
                    OptimGroupOverride(params=["embeddings.weight"], opts=dict(weight_decay=0.0))
                ],
            ),
            scheduler=CosWithWarmup(warmup=self.capped("warmup_steps")),
            max_grad_norm=self.max_grad_norm,
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
            "checkpointer": CheckpointerCallback(
                # 0 = no checkpoints (benchmarks); otherwise capped at the run's length.
                save_interval=self.capped("checkpoint_interval") or None,
                enabled=self.checkpoint_interval > 0,
                save_async=False,
                # An lr=0 step-0 checkpoint perturbs the optimizer state: skip it.
                pre_train_checkpoint=False,
            ),
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

    def eval_schedule(self) -> tuple[int, bool]:
        """(eval_interval as this run uses it, whether to evaluate once more at the last step):
        every evaluator runs every eval_interval steps and at the end."""
        interval = self.capped("eval_interval")
        if interval == 0:  # off
            return 0, False
        return interval, (self.stop_at_step or self.max_steps) % interval != 0
