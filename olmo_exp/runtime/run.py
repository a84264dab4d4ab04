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

from omegaconf import DictConfig, ListConfig, OmegaConf

from olmo_exp.base.errors import ConfigError, DataError, Rejected
from olmo_exp.base.files import (  # the attempts' configs: the report reads them too
    attempt_dirs,
    latest_attempt_config,
    remove_created_dir,
    write_json_atomic,
)
from olmo_exp.build.summary import SUMMARY_FILE, format_resolved, format_summary, run_summary
from olmo_exp.config import topology as topo
from olmo_exp.config.compose import replace_preset_budget, run_config
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

# Keys whose change makes an existing checkpoint belong to a different experiment: the model,
# the tokens (what data, how tokenized and cut) and their order (seed, batch size). Everything else
# (lr, schedule, intervals, max_steps, ...) may change between attempts; train.* changes are listed.
IDENTITY_KEYS = (
    "model", "data.source", "data.path", "data.hf_dataset", "data.hf_config", "data.text_column",
    "data.max_articles", "data.validation_fraction", "data.shard_size_mb", "data.tokenizer",
    "data.bpe_vocab_size", "data.sequence_length", "data.token_files",
    "data.validation_token_files", "data.token_dtype", "train.seed", "train.global_batch_size",
    "train.init_from", "train.init_kv",  # the weights the checkpoints grew from
)
_MISSING = object()


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
        replace_preset_budget(cfg, list(hydra_cfg.overrides.task))  # also in .hydra/config.yaml
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
        """Refuse to resume checkpoints that a different model, data or data order produced; say
        which ``train.*`` settings differ from the previous attempt's."""
        checkpoints = sorted(self.checkpoint_dir.glob("step*"))
        if not checkpoints:
            return
        previous = latest_attempt_config(self.run_dir)
        if previous is None:
            raise RunDirError(
                "hydra.run.dir", str(self.run_dir),
                "holds checkpoints but no .hydra/config.yaml saying what made them; use a new run dir",
            )
        old, new = OmegaConf.load(previous), self._composed()
        for key in IDENTITY_KEYS:
            before, now = _select(old, key), _select(new, key)
            if before is not _MISSING and before != now:  # _MISSING: a key newer than the run dir
                raise RunDirError(
                    "hydra.run.dir", str(self.run_dir),
                    f"holds checkpoints of a different run ({key}: {before} != {now}); "
                    f"use a new run dir or the same {key}",
                )
        changed = []
        for key in new.train:
            before, now = _select(old.train, key), _select(new.train, key)
            if before is not _MISSING and before != now:
                changed.append(f"train.{key}: {before} -> {now}")
        if changed and console.rank_from_env() == 0:
            log.info("resuming with train settings changed since the last attempt: %s",
                     ", ".join(changed))

    def check_init(self, tokenizer_vocab_size: int) -> None:
        """``train.init_from``: the source exists and each of its tensors fits the model (shapes
        only), before data prep. Skipped when the run dir holds a checkpoint: the run resumes from
        it, and check_run_dir has made sure that it grew from the same source."""
        from olmo_exp.build.init_from import check_init, has_checkpoint, hf_settings_mismatch

        train, model = self.config.train, self.config.model
        if train.init_from is None or has_checkpoint(self.checkpoint_dir):
            return
        model_config = model.build_config(model.padded_vocab_size(tokenizer_vocab_size))
        source = check_init(train.init_from, train.init_kv, model_config)
        train.init_from = source.path  # absolute: the ranks may start elsewhere
        differ = hf_settings_mismatch(source, model_config)
        if differ and console.rank_from_env() == 0:
            log.warning("train.init_from: the HF model's config differs from this model's: %s",
                        "; ".join(differ))

    def _composed(self) -> DictConfig:
        """This attempt's config as .hydra/config.yaml holds it: the budget as given, not resolved."""
        node = self.hydra_files.get("config.yaml")
        if node is None:
            return OmegaConf.create(self.config.to_dict())
        return OmegaConf.create(OmegaConf.to_container(node, resolve=True, enum_to_str=True))

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
            self.check_init(tokenizer.vocab_size)
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
        rank0 = console.rank_from_env() == 0
        if rank0:  # where to look, before the first step and again below the last line
            log.info("run directory: %s", self.run_dir)
        try:
            if world.spawns:
                launch.spawn(rank_worker, args, nproc=world.nproc_per_node,
                             log_dir=self.run_dir / "logs")
            elif world.world_size > 1:  # a rank started by torchrun or SLURM
                rank_worker(*args)
            else:
                train_worker(*args)
        finally:
            if rank0:
                log.info("run directory: %s", self.run_dir)

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
        if (hydra_dir / "config.yaml").exists():  # a later attempt: every attempt's config is kept
            hydra_dir = hydra_dir / f"attempt-{len(attempt_dirs(self.run_dir)) + 2}"
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


def _select(node: Any, key: str) -> Any:
    """A config value as plain data (lists and dicts compare by value), _MISSING if absent."""
    value = OmegaConf.select(node, key, default=_MISSING, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
