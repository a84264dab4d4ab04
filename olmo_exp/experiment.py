"""The run object: the one place where the config groups are wired into an olmo-core training run.

Lifecycle (see README): validate -> check the run directory -> dry run, or prepare data ->
start ranks (if needed) -> on every rank: build model, train module, data loader, trainer -> fit.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from olmo_exp import console, launch, slurm
from olmo_exp.data.errors import DataError
from olmo_exp.dist import DistConfig
from olmo_exp.files import remove_created_dir, write_json_atomic
from olmo_exp.model import format_summary, summarize
from olmo_exp.schema import RunConfig, run_config
from olmo_exp.train import ConsoleMode
from olmo_exp.validation import ConfigError

if TYPE_CHECKING:
    from olmo_core.nn.transformer import TransformerConfig

    from olmo_exp.data.tokenizer import TokenizerInfo

log = logging.getLogger(__name__)

# Keys whose change makes an existing checkpoint belong to a different experiment.
IDENTITY_KEYS = ("model", "data.tokenizer", "data.bpe_vocab_size", "data.sequence_length")


class RunDirError(ConfigError):
    pass


@dataclass
class Run:
    config: RunConfig
    run_dir: Path
    hydra_files: dict[str, Any] = field(default_factory=dict)
    """Hydra's own composed config/overrides, written to .hydra/ once the run is accepted."""
    fresh_dir: bool = True
    """The run dir was empty when this run started: everything in it is this run's own."""
    check_launcher: bool = False
    """Started by Hydra: refuse hydra/launcher=slurm|local without -m."""

    @classmethod
    def from_hydra(cls, cfg: DictConfig) -> Run:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        config = run_config(cfg)
        files = {
            "config.yaml": cfg,
            "overrides.yaml": OmegaConf.create(list(hydra_cfg.overrides.task)),
        }
        fresh = not any(run_dir.iterdir()) if run_dir.exists() else True
        if config.wandb.group is None and hydra_cfg.mode == RunMode.MULTIRUN:
            config.wandb.group = str(hydra_cfg.sweep.dir)  # a sweep's runs line up in the UI
        return cls(config=config, run_dir=run_dir, hydra_files=files, fresh_dir=fresh,
                   check_launcher=True)

    # -- checks -----------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def check_run_dir(self) -> None:
        """Refuse to resume checkpoints that a different model (or tokenization) produced."""
        checkpoints = sorted(self.checkpoint_dir.glob("step*"))
        if not checkpoints:
            return
        previous = self.run_dir / ".hydra" / "config.yaml"
        if not previous.exists():
            raise RunDirError(
                "hydra.run.dir", str(self.run_dir),
                "holds checkpoints but no .hydra/config.yaml saying what made them; use a new run dir",
            )
        old, new = OmegaConf.load(previous), OmegaConf.create(self.config.to_dict())
        for key in IDENTITY_KEYS:
            before, now = OmegaConf.select(old, key), OmegaConf.select(new, key)
            if before != now:
                raise RunDirError(
                    "hydra.run.dir", str(self.run_dir),
                    f"holds checkpoints of a different run ({key}: {before} != {now}); "
                    f"use a new run dir or the same {key}",
                )

    # -- lifecycle --------------------------------------------------------------------------

    def execute(self) -> None:
        # The same log format for every job (Hydra's job logging is off, see conf/config.yaml).
        console.configure_logging(log_file=self.run_dir / console.LOG_FILE,
                                  rank=console.rank_from_env(),  # torchrun/SLURM: every rank
                                  full=self.config.train.console == ConsoleMode.full)
        from olmo_exp.data.prep import prepare  # the data stack: only once a run really starts

        try:
            if self.check_launcher:
                slurm.check_launcher_mode()
            tokenizer = self.config.validate()
            self.check_run_dir()
        except ConfigError as e:
            self._reject(e)
        world = launch.topology(self.config.dist)
        if console.rank_from_env() == 0:
            for line in self.config.notices(world):
                log.warning(line)
        if self.config.dry_run:
            self.dry_run(tokenizer, world)
            return
        try:
            manifest = prepare(self.config.data, tokenizer)
            # Refuses a tokenizer, vocab, eos/pad or dtype mismatch and missing/truncated shards.
            manifest.verify(model_vocab_size=self.config.model.padded_vocab_size(manifest.vocab_size),
                            tokenizer=tokenizer)
        except DataError as e:
            self._reject(e)
        self._write_hydra_files()
        args = (self.config.to_dict(), str(self.run_dir), str(manifest.root))
        if world.spawns:
            launch.spawn(rank_worker, args, nproc=world.nproc_per_node,
                         log_dir=self.run_dir / "logs")
        elif world.world_size > 1:  # a rank started by torchrun or SLURM
            rank_worker(*args)
        else:
            train_worker(*args)

    def _reject(self, error: Exception) -> NoReturn:
        print(f"error: {error}", file=sys.stderr)
        if self.fresh_dir and console.rank_from_env() == 0:
            remove_created_dir(self.run_dir)  # Hydra made it (and its job log) for this run
        sys.exit(2)

    def _write_hydra_files(self) -> None:
        # SLURM/submitit tasks: RANK is exported only later (init_distributed); console.rank_from_env
        # reads the task's rank from the launcher's own environment.
        if launch.already_launched() and console.rank_from_env() != 0:
            return
        hydra_dir = self.run_dir / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        for name, node in self.hydra_files.items():
            OmegaConf.save(node, hydra_dir / name)

    def dry_run(self, tokenizer: TokenizerInfo, world: launch.Topology) -> None:
        vocab = self.config.model.padded_vocab_size(tokenizer.vocab_size)
        summary = run_summary(self.config, self.config.model.build_config(vocab), world)
        print(format_resolved(summary["dist"]))
        print(format_summary(summary))
        if console.rank_from_env() != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        print(f"wrote {self.run_dir / SUMMARY_FILE} (dry run: no data prep, no training)")


SUMMARY_FILE = "model_summary.json"


def run_summary(cfg: RunConfig, model_config: TransformerConfig, world: launch.Topology) -> dict[str, Any]:
    """model_summary.json: the built model at the run's sequence length and sharding, and ``dist``."""
    return {**summarize(cfg.model, model_config, sequence_length=cfg.data.sequence_length,
                        shard_degree=cfg.dist.param_shard_degree(world.world_size)),
            "dist": resolved_dist(cfg.dist, world)}


def resolved_dist(dist: DistConfig, world: launch.Topology) -> dict[str, Any]:
    """What the dist group's nulls became on this host (model_summary.json's ``dist``)."""
    import torch

    return {
        "strategy": dist.strategy.value,
        "world_size": world.world_size,
        "backend": launch.backend_for(dist, world),
        "precision": dist.precision(world.on_gpu),
        "compile": dist.compile_enabled(world.on_gpu),
        "device": torch.cuda.get_device_name(0) if world.on_gpu else "cpu",
    }


def format_resolved(resolved: dict[str, Any]) -> str:
    """The run's header line: tells runs on different hosts apart at a glance."""
    return "run: " + " ".join(f"{k}={v}" if k != "device" else f"{k}={v!r}"
                              for k, v in resolved.items())


def rank_worker(config_dict: dict[str, Any], run_dir_str: str, data_dir_str: str) -> None:
    """:func:`train_worker` as one of several ranks: a failure is logged by the rank itself, with
    its rank and traceback (on the shared console under torchrun/SLURM, where other ranks show
    errors only; in its own file under logs/ when run.py started it) before it propagates."""
    try:
        train_worker(config_dict, run_dir_str, data_dir_str)
    except Exception:
        log.exception("rank %d failed", console.rank_from_env())
        raise


def train_worker(config_dict: dict[str, Any], run_dir_str: str, data_dir_str: str) -> None:
    """One rank's training: build everything from the validated config and the prepared data dir.

    Module-level and fed plain data, so that torch's elastic launcher can start it in new processes.
    """
    from olmo_core.data import NumpyDataLoaderConfig
    from olmo_core.distributed.utils import get_rank, get_world_size
    from olmo_core.utils import setup_logging

    from olmo_exp.callbacks import (
        ConsoleCallback,
        DistMemoryCallback,
        GenerationCallback,
        MetricsFileCallback,
        RequeueCallback,
        WandbLogCallback,
    )
    from olmo_exp.data.manifest import Manifest
    from olmo_exp.data.prep import load_tokenizer

    cfg = RunConfig.from_dict(config_dict)
    run_dir = Path(run_dir_str)
    train, seq_len = cfg.train, cfg.data.sequence_length

    # olmo-core sets up logging once per process (its handler, its format): let it do so now,
    # then install this project's handlers, which its environment setup below keeps.
    setup_logging()
    console.configure_logging(log_file=run_dir / console.LOG_FILE, rank=console.rank_from_env(),
                              full=train.console == ConsoleMode.full)
    launch.init_distributed(cfg.dist, seed=train.seed)
    world = launch.topology(cfg.dist)
    manifest = Manifest.load(data_dir_str)  # what the launching process prepared and verified

    # model group -> olmo-core TransformerConfig (LWS as block_overrides)
    model_config = cfg.model.build_config(cfg.model.padded_vocab_size(manifest.vocab_size))
    model_config.init_seed = train.seed
    summary = run_summary(cfg, model_config, world)
    if get_rank() == 0:
        log.info("%s", format_resolved(summary["dist"]))
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
        log.info("model:\n%s", format_summary(summary))

    # train + dist groups -> train module (parallelizes and initializes the meta-device model)
    dist, on_gpu = cfg.dist, world.on_gpu
    train_module = train.train_module_config(
        sequence_length=seq_len, dp_config=dist.dp_config(world.world_size, on_gpu),
        autocast_precision=dist.autocast_precision(on_gpu), ac_config=dist.ac_config(),
        compile_model=dist.compile_enabled(on_gpu),
    ).build(model_config.build(init_device="meta"))

    # data group -> olmo-core dataset and loader over the manifest's token files
    work_dir = str(run_dir / "dataset-work")
    dataset = manifest.dataset_config("train", sequence_length=seq_len, work_dir=work_dir).build()
    data_loader = NumpyDataLoaderConfig(
        global_batch_size=train.global_batch_size * seq_len,  # tokens
        seed=train.seed,
        num_workers=0,
        work_dir=work_dir,
    ).build(dataset, dp_process_group=train_module.dp_process_group)

    callbacks: dict[str, Any] = {
        "metrics_file": MetricsFileCallback(path=run_dir / "metrics.jsonl"),
        # dist/rank_state_bytes vs dist/unsharded_state_bytes: what sharding saves, per rank.
        "dist_memory": DistMemoryCallback(),
        "generation": GenerationCallback(
            config=dataclasses.replace(cfg.generate,
                                       interval=min(cfg.generate.interval, train.max_steps)),
            tokenizer=load_tokenizer(manifest),
            eos_token_id=manifest.eos_token_id,
            path=run_dir / "generations.jsonl",
        ),
    }
    if train.eval_interval > 0 and manifest.paths("validation"):
        callbacks["lm_evaluator"] = train.evaluator_config(
            manifest.dataset_config("validation", sequence_length=seq_len, work_dir=work_dir)
        )
    if train.console == ConsoleMode.compact:  # replaces olmo-core's block (train.trainer_config)
        callbacks["console"] = ConsoleCallback(world_size=get_world_size(),
                                               progress_bar=console.want_progress_bar())
    if slurm.in_sweep_job():  # the time-limit signal stops all ranks after one step, checkpointed
        callbacks["requeue"] = RequeueCallback()
    if cfg.wandb.enabled:
        callbacks["wandb"] = WandbLogCallback(
            config=cfg.wandb, run_dir=run_dir, run_name=run_dir.name, run_config=config_dict
        )

    trainer = train.trainer_config(
        run_dir=run_dir, callbacks=callbacks, flops_per_token=summary["flops_per_token"],
        on_gpu=world.on_gpu,
    ).build(train_module, data_loader)
    is_rank0 = get_rank() == 0  # asked before teardown: afterwards every process says rank 0
    try:
        trainer.fit()  # loads the latest checkpoint in run_dir/checkpoints first, if any
    finally:
        launch.teardown()
    if is_rank0:
        from olmo_exp.report import plot_run

        plot_run(run_dir, tokens_per_step=train.global_batch_size * seq_len)
    if trainer.is_canceled:
        slurm.requeue_if_signaled(trainer.global_step)  # submitit requeues; the next attempt resumes
