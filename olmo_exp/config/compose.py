"""The config repository as Hydra sees it: the structured schemas of every group, the sweep presets,
the resolvers ``conf/`` uses, and composition for tools and tests (what ``run.py`` would compose).

Registration of the launchers and of ``--help`` belongs to the command line (``olmo_exp.cli``).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from olmo_exp.base.files import CONF_DIR, SWEEPS_DIR
from olmo_exp.config.cluster import ClusterConfig, default_gpus_per_node, tasks_per_node
from olmo_exp.config.data import DataConfig
from olmo_exp.config.dist import DistConfig
from olmo_exp.config.eval import EvalConfig
from olmo_exp.config.lws import LWSConfig
from olmo_exp.config.model import ModelConfig
from olmo_exp.config.run import RunConfig
from olmo_exp.config.train import TrainConfig, budget_given_alone, other_budget


def register_schemas() -> None:
    """The structured schemas (checked at compose time), the sweep presets and the resolvers."""
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="model/lws", name="lws_schema", node=LWSConfig)
    cs.store(group="dist", name="dist_schema", node=DistConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
    cs.store(group="cluster", name="cluster_schema", node=ClusterConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
    # The presets live outside conf/ (one folder of research questions, not run settings); stored
    # by absolute path so that `+sweep=NAME` works from any working directory.
    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        cs.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")


def register_resolvers() -> None:
    # hydra.run.dir: one directory per launch, the same for every rank that torchrun starts.
    OmegaConf.register_new_resolver("olmo_run_id", shared_run_id, replace=True)
    # hydra/launcher=slurm|local: one task per rank; GPUs from the cluster profile or partition.
    OmegaConf.register_new_resolver("olmo_tasks_per_node", tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("olmo_gpus_per_node", default_gpus_per_node, replace=True)


def compose(overrides: list[str] | None = None, *, return_hydra_config: bool = False) -> DictConfig:
    """The config ``run.py`` would compose from these overrides (for tools, tests and ``--help``),
    standalone or inside a running Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    kwargs = {"config_name": "config", "overrides": list(overrides or []),
              "return_hydra_config": return_hydra_config}
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(**kwargs)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(**kwargs)


def compose_run(overrides: list[str] | None = None) -> RunConfig:
    """The typed run object's config for these overrides."""
    cfg = compose(overrides)
    replace_preset_budget(cfg, overrides or [])
    return run_config(cfg)


def replace_preset_budget(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """A budget the overrides give alone (``train.max_tokens=N``, or a sweep axis of it) replaces
    the other budget the preset set (smoke's ``max_steps``, olmo2's ``max_tokens``): null it, in
    place, so that ``.hydra/config.yaml`` and the report read the budget that was typed."""
    key = budget_given_alone(overrides)
    if key is None:
        return
    with read_write(cfg.train), open_dict(cfg.train):
        cfg.train[other_budget(key)] = None


def run_config(cfg: DictConfig) -> RunConfig:
    """The typed RunConfig of a composed config; a ``hydra`` node (a launcher's or a callback's
    view: its ``hydra.overrides.task`` are the point's overrides) is left out, as Hydra does for
    the task function."""
    if "hydra" in cfg:
        cfg = copy.deepcopy(cfg)
        overrides = list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        replace_preset_budget(cfg, overrides)
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, RunConfig)
    return config


def shared_run_id(fmt: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """A run-dir name that every local rank of one launch computes identically.

    torchrun's TORCHELASTIC_RUN_ID is shared by the ranks, but under a static ``--master_port``
    rendezvous (plain ``torchrun --nproc_per_node N``) it is literally ``none`` for every launch, so
    ``outputs/${oc.env:TORCHELASTIC_RUN_ID}`` would reuse (and resume) one directory forever. On one
    node the ranks share their parent, the torchrun agent: its start time names the launch. Outside
    torchrun: now. Meant as a Hydra resolver for ``hydra.run.dir``.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return run_id
    if run_id == "none" and os.environ.get("GROUP_WORLD_SIZE", "1") == "1":
        try:
            ticks = int(Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
            boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime "))
            return time.strftime(fmt, time.localtime(boot + ticks / os.sysconf("SC_CLK_TCK")))
        except (OSError, ValueError, IndexError, StopIteration):
            return run_id  # not Linux: keep torchrun's own (shared) id
    if run_id:
        return run_id  # several nodes, static rendezvous: "none" is at least the same everywhere
    return time.strftime(fmt)
