"""The run object: the one place where the config groups are wired into an olmo-core training run."""

from __future__ import annotations

from dataclasses import dataclass, field

from olmo_exp.data.config import DataConfig
from olmo_exp.dist import DistConfig
from olmo_exp.generate import GenerateConfig
from olmo_exp.model import ModelConfig
from olmo_exp.train import TrainConfig, WandbConfig


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    dry_run: bool = False
