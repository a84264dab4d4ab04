"""The ``train`` group: olmo-core's train module, trainer and callbacks."""

from __future__ import annotations

from dataclasses import dataclass


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
    """Steps between checkpoints; the final step is always saved."""
    eval_interval: int = 50
    """Steps between validation-loss evaluations (0 = off)."""
    eval_batches: int = 4
    log_interval: int = 5
    """Steps between metric collections (each one lands in metrics.jsonl)."""
    seed: int = 42
    stop_at_step: int | None = None
    """Stop early at this step (a resumable break, e.g. before a SLURM time limit); null = run to max_steps."""


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "olmo-exp"
    entity: str | None = None
    group: str | None = None
    mode: str = "online"
    """online | offline | disabled"""
