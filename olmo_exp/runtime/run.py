"""The run object: the one place where the config groups are wired into an olmo-core training run.

Lifecycle (see README): validate -> check the run directory -> dry run, or prepare data ->
start ranks (if needed) -> on every rank: build model, train module, data loader, trainer -> fit.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from olmo_exp.base.errors import ConfigError, DataError, Rejected
from olmo_exp.base.files import remove_created_dir, write_json_atomic
from olmo_exp.build.summary import SUMMARY_FILE, format_resolved, format_summary, run_summary
from olmo_exp.config import topology as topo
from olmo_exp.config.compose import run_config
from olmo_exp.config.run import RunConfig
from olmo_exp.config.train import ConsoleMode
from olmo_exp.data.check import check_run
from olmo_exp.runtime import console, launch
from olmo_exp.runtime.worker import rank_worker, train_worker

if TYPE_CHECKING:
    from olmo_exp.data.tokenizer import TokenizerInfo

# Launcher choices that only make sense with -m (they submit jobs).
SWEEP_LAUNCHERS = ("slurm", "local", "submitit_slurm", "submitit_local")

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
        if hydra_cfg.mode == RunMode.MULTIRUN:
            name_sweep_job(config, Path(str(hydra_cfg.sweep.dir)), list(hydra_cfg.overrides.task))
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
                check_launcher_mode()
            tokenizer = check_run(self.config)
            self.check_run_dir()
        except ConfigError as e:
            self._reject(e)
        world = topo.topology(self.config.dist)
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
            if self.config.train.eval_interval > 0:  # the validation set every job shares
                manifest.eval_sequences(self.config.train.eval_tokens, self.config.data.sequence_length)
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
        line = f"error: {error}"
        print(line, file=sys.stderr)
        if self.fresh_dir and console.rank_from_env() == 0:
            remove_created_dir(self.run_dir)  # Hydra made it (and its job log) for this run
        raise Rejected(line)  # exit code 2

    def _write_hydra_files(self) -> None:
        # SLURM/submitit tasks: RANK is exported only later (init_distributed); console.rank_from_env
        # reads the task's rank from the launcher's own environment.
        if topo.already_launched() and console.rank_from_env() != 0:
            return
        hydra_dir = self.run_dir / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        for name, node in self.hydra_files.items():
            OmegaConf.save(node, hydra_dir / name)

    def dry_run(self, tokenizer: TokenizerInfo, world: topo.Topology) -> None:
        vocab = self.config.model.padded_vocab_size(tokenizer.vocab_size)
        summary = run_summary(self.config, self.config.model.build_config(vocab), world)
        print(format_resolved(summary["dist"]))
        print(format_summary(summary))
        if console.rank_from_env() != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        print(f"wrote {self.run_dir / SUMMARY_FILE} (dry run: no data prep, no training)")


def name_sweep_job(config: RunConfig, sweep_dir: Path, overrides: list[str]) -> None:
    """wandb: a sweep's runs share a group (the sweep dir), are named by the overrides the sweep
    varies and tagged with their arm (those minus the seed) and seed."""
    wandb = config.wandb
    if wandb.group is None:
        wandb.group = str(sweep_dir)  # a sweep's runs line up in the UI
    multirun = OmegaConf.load(sweep_dir / "multirun.yaml") if (sweep_dir / "multirun.yaml").exists() \
        else OmegaConf.create({})
    swept = {str(k).lstrip("+") for k in OmegaConf.select(multirun, "hydra.sweeper.params",
                                                          default={}) or {}}
    swept |= {o.split("=", 1)[0].lstrip("+") for o in
              OmegaConf.select(multirun, "hydra.overrides.task", default=[]) or [] if "," in o}
    own = [o for o in overrides if o.split("=", 1)[0].lstrip("+") in swept]
    seed = [o.split("=", 1)[1] for o in own if o.split("=", 1)[0].lstrip("+") == "train.seed"]
    arm = " ".join(o for o in own if o.split("=", 1)[0].lstrip("+") != "train.seed")
    if wandb.name is None and own:
        wandb.name = " ".join(own)
    wandb.tags = [*wandb.tags, f"arm:{arm or '(all)'}"[:64], f"seed:{seed[-1] if seed else 'default'}"]


def check_launcher_mode() -> None:
    """``python run.py hydra/launcher=slurm`` without -m would silently train here: refuse it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choice = hydra_cfg.runtime.choices.get("hydra/launcher")
    if hydra_cfg.mode == RunMode.RUN and choice in SWEEP_LAUNCHERS:
        raise ConfigError("hydra/launcher", choice,
                          "submits jobs only for sweeps: add -m (python run.py -m "
                          f"hydra/launcher={choice} ...); a single point is a sweep of one job")
