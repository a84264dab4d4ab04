"""The config of a run: :class:`RunConfig`, every group composed into one typed object, and the
checks across groups (batch x world, sequence length, the world the run will have)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from olmo_exp.base.errors import ConfigError, non_negative, positive
from olmo_exp.config import topology as topo
from olmo_exp.config.cluster import ClusterConfig
from olmo_exp.config.data import DataConfig, DataSource
from olmo_exp.config.dist import DistConfig
from olmo_exp.config.eval import EvalConfig
from olmo_exp.config.generate import GenerateConfig
from olmo_exp.config.model import ModelConfig
from olmo_exp.config.train import TrainConfig
from olmo_exp.config.wandb import WandbConfig


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """SLURM settings (conf/hydra/launcher/slurm.yaml reads them); nothing else uses them."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    dry_run: bool = False

    def validate(self, host: topo.Host | None = None) -> None:
        """Every check of the config alone: one ConfigError, before anything is written. The checks
        that read a tokenizer file are data's (:func:`olmo_exp.data.check.check_run`).

        ``host``: the launcher and GPUs to check against; None = this process's (topo.host()).
        """
        self.model.validate()
        self.data.validate()
        self.dist.validate()
        world = topo.resolve_topology(self.dist, host or topo.host())
        topo.validate_world(self.dist, world)
        # In place, once: the worker receives steps and a micro-batch, never a budget to redo.
        self.train.resolve(sequence_length=self.data.sequence_length, world_size=world.world_size)
        self.train.validate()
        micro, world_size = self.train.micro_batch_size, world.world_size
        if self.train.global_batch_size % (micro * world_size) != 0:
            raise ConfigError(
                "train.global_batch_size", self.train.global_batch_size,
                f"must be a multiple of train.micro_batch_size x world size = {micro} x {world_size}",
            )
        if self.data.sequence_length > self.model.max_sequence_length:
            raise ConfigError(
                "data.sequence_length", self.data.sequence_length,
                f"must be <= model.max_sequence_length={self.model.max_sequence_length}",
            )
        if self.train.eval_tokens < self.data.sequence_length:
            raise ConfigError("train.eval_tokens", self.train.eval_tokens,
                              f"must be >= data.sequence_length={self.data.sequence_length} "
                              "(at least one validation sequence)")
        self.eval.validate(model_context=self.model.max_sequence_length)
        non_negative("generate.interval", self.generate.interval)
        positive("generate.max_new_tokens", self.generate.max_new_tokens)
        non_negative("generate.temperature", self.generate.temperature)

    def notices(self, world: topo.Topology) -> list[str]:
        """One line each for what the run adjusts or a user may not expect; printed once."""
        lines = []
        train = self.train
        longer = [f"train.{k}={getattr(train, k)}"
                  for k in ("warmup_steps", "checkpoint_interval", "eval_interval")
                  if getattr(train, k) > train.max_steps]
        if self.generate.interval > train.max_steps:
            longer.append(f"generate.interval={self.generate.interval}")
        if longer:
            lines.append(f"{', '.join(longer)} capped at train.max_steps={train.max_steps} "
                         "(longer than the run)")
        if (self.data.source == DataSource.tokens and not self.data.validation_token_files
                and train.eval_interval > 0):
            lines.append("data.validation_token_files is empty: no validation loss"
                         + (" (downstream tasks still run)" if self.eval.tasks else ""))
        lone = topo.lone_rank_notice(self.dist, world)
        if lone:
            lines.append(lone)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return OmegaConf.to_container(OmegaConf.structured(self), resolve=True, enum_to_str=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), d))
