"""The ``wandb`` keys: whether and where a run logs to Weights & Biases."""

from __future__ import annotations

from dataclasses import dataclass
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
