"""Registers every group's structured config with Hydra, so unknown keys and wrong types fail at compose."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from olmo_exp.data.config import DataConfig
from olmo_exp.dist import DistConfig
from olmo_exp.experiment import RunConfig
from olmo_exp.launch import shared_run_id
from olmo_exp.lws import LWSConfig
from olmo_exp.model import ModelConfig
from olmo_exp.slurm import register_launchers, register_resolvers
from olmo_exp.train import TrainConfig


def register() -> None:
    # hydra.run.dir: one directory per launch, the same for every rank that torchrun starts.
    OmegaConf.register_new_resolver("olmo_run_id", shared_run_id, replace=True)
    register_resolvers()  # hydra/launcher=slurm|local: tasks_per_node
    register_launchers()
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="model/lws", name="lws_schema", node=LWSConfig)
    cs.store(group="dist", name="dist_schema", node=DistConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
