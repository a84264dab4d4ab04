"""The ``wandb`` keys: whether and where a run logs to Weights & Biases."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"



@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "olmo-exp"
    entity: str | None = None
    group: str | None = None
    mode: WandbMode = WandbMode.online
    name: str | None = None
    """null: the run dir's name; in a sweep, the job's swept overrides (e.g. model.n_kv_heads=3
    train.seed=1)."""
    tags: list[str] = field(default_factory=list)
    """In a sweep also ``arm:<swept overrides without the seed>`` and ``seed:<seed>``."""
