"""The config of a run: :class:`RunConfig` (every group composed, and the checks across groups),
its registration with Hydra, composition for tools and tests, and the check of a command line's
overrides before Hydra composes (Hydra's ``+``/``++`` would add unknown keys even to them)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from olmo_exp import launch
from olmo_exp.data.config import DataConfig
from olmo_exp.dist import DistConfig
from olmo_exp.files import CONF_DIR, SWEEPS_DIR
from olmo_exp.generate import GenerateConfig
from olmo_exp.launch import shared_run_id
from olmo_exp.lws import LWSConfig
from olmo_exp.model import ModelConfig
from olmo_exp.slurm import register_launchers, register_resolvers
from olmo_exp.train import TrainConfig, WandbConfig
from olmo_exp.usage import register as register_help
from olmo_exp.validation import ConfigError, non_negative, positive

if TYPE_CHECKING:
    from olmo_exp.data.tokenizer import TokenizerInfo


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    dry_run: bool = False

    def validate(self, host: launch.Host | None = None) -> TokenizerInfo:
        """Every check that needs no data and no process: one ConfigError, before anything is written.

        ``host``: the launcher and GPUs to check against; None = this process's (launch.host()).
        Returns the tokenizer it resolved, for data prep and the model's vocab (resolved once).
        """
        self.model.validate()
        self.data.validate()
        self.train.validate()
        self.dist.validate()
        world = launch.resolve_topology(self.dist, host or launch.host())
        self.dist.validate_world(world)
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
        from olmo_exp.data.tokenizer import tokenizer_info  # numpy: not on the --help path

        tokenizer = tokenizer_info(self.data)
        if self.model.vocab_size is not None and self.model.vocab_size < tokenizer.vocab_size:
            raise ConfigError(
                "model.vocab_size", self.model.vocab_size,
                f"must be >= the tokenizer's vocab ({tokenizer.vocab_size}) or null",
            )
        non_negative("generate.interval", self.generate.interval)
        positive("generate.max_new_tokens", self.generate.max_new_tokens)
        non_negative("generate.temperature", self.generate.temperature)
        return tokenizer

    def notices(self, world: launch.Topology) -> list[str]:
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
        lone = launch.lone_rank_notice(self.dist, world)
        if lone:
            lines.append(lone)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return OmegaConf.to_container(OmegaConf.structured(self), resolve=True, enum_to_str=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), d))


def register() -> None:
    # hydra.run.dir: one directory per launch, the same for every rank that torchrun starts.
    OmegaConf.register_new_resolver("olmo_run_id", shared_run_id, replace=True)
    register_help()  # ${olmo_help:...} in hydra.help.template
    register_resolvers()  # hydra/launcher=slurm|local: tasks_per_node
    register_launchers()
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="model/lws", name="lws_schema", node=LWSConfig)
    cs.store(group="dist", name="dist_schema", node=DistConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
    # The presets live outside conf/ (one folder of research questions, not run settings); stored
    # by absolute path so that `+sweep=NAME` works from any working directory.
    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        cs.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")


def compose(overrides: list[str] | None = None, *, return_hydra_config: bool = False) -> DictConfig:
    """The config ``run.py`` would compose from these overrides (for tools, tests and ``--help``),
    standalone or inside a running Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    kwargs = {"config_name": "config", "overrides": list(overrides or []),
              "return_hydra_config": return_hydra_config}
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(**kwargs)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(**kwargs)


def compose_run(overrides: list[str] | None = None) -> RunConfig:
    """The typed run object's config for these overrides."""
    return run_config(compose(overrides))


def run_config(cfg: DictConfig) -> RunConfig:
    """The typed RunConfig of a composed config; a ``hydra`` node (a launcher's or a callback's
    view) is left out, as Hydra does for the task function."""
    if "hydra" in cfg:
        cfg = copy.deepcopy(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, RunConfig)
    return config


class UnknownOverrideError(ConfigError):
    """An override names a key or a group option that the structured configs do not have."""

    def __init__(self, override: str, key: str, what: str, valid: str):
        ValueError.__init__(self, f"{override}: {what}; {valid}")
        self.key, self.value, self.valid = key, override, valid


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (Optional[...] unwrapped), or None for anything else."""
    if dataclasses.is_dataclass(tp):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def unknown_key(key: str, schema: type = RunConfig) -> tuple[str, list[str]] | None:
    """None if ``key`` (dotted) exists in the structured configs, else (the part that does not
    exist, the keys valid at that place)."""
    cls: type | None = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        if cls is None:  # a dict, list or Any value: its items are not part of the schema
            return None
        fields = _field_types(cls)
        if part not in fields:
            return ".".join(parts[: i + 1]), list(fields)
        tp = fields[part]
        cls = _dataclass_of(tp)
        if cls is None and i + 1 < len(parts) and not _is_container(tp):
            return ".".join(parts[: i + 2]), []
    return None


def _is_container(tp: Any) -> bool:
    origins = {typing.get_origin(a) or a for a in (tp, *typing.get_args(tp))}
    return bool(origins & {dict, list, tuple, typing.Any})


def check_overrides(overrides: list[str], extra_dirs: list[str] | None = None) -> None:
    """Every override that names a key or group option outside the configs, whatever its form
    (``key=v``, ``+key=v``, ``++key=v``, ``~key``, ``group=option``, sweeps): one ConfigError.

    Hydra itself rejects a plain ``key=v`` for an unknown key, but ``+``/``++`` add keys even to
    structured configs, where they would be saved and silently ignored. Hydra's own settings
    (``hydra.*``, ``hydra/...``) are left to Hydra; a malformed override too (it reports those).
    """
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return
    search_path = create_config_search_path(str(CONF_DIR))
    for extra in extra_dirs or []:
        search_path.append("command-line", f"file://{Path(extra).resolve()}")
    repo = ConfigRepository(config_search_path=search_path)
    schema = OmegaConf.structured(RunConfig)

    def groups(parent: str = "") -> list[str]:
        names = [f"{parent}/{g}" if parent else g
                 for g in repo.get_group_options(parent, ObjectType.GROUP)]
        return [n for g in names if g != "hydra" for n in (g, *groups(g))]

    for override in parsed:
        key = override.key_or_group
        line = override.input_line or key
        if repo.group_exists(key):  # Hydra's own groups too (hydra/launcher=...)
            if override.is_delete() or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
                continue  # Hydra matches globs against the options itself
            options = sorted(o for o in repo.get_group_options(key, ObjectType.CONFIG)
                             if not o.endswith("_schema"))  # our schemas are not choices
            value = override.value()
            if override.is_discrete_sweep():
                values = list(override.sweep_string_iterator())
            else:
                values = value if isinstance(value, list) else [value]
            for value in values:
                if isinstance(value, str) and value not in options:
                    raise UnknownOverrideError(line, key, f"{key} has no option {value!r}",
                                               f"valid: {', '.join(options)}")
            continue
        if override.is_hydra_override() or key == "hydra":
            continue  # Hydra's settings: Hydra checks them (and ++hydra.job.env_set.X is legal)
        if "/" in key:
            raise UnknownOverrideError(line, key, f"{key} is not a config group",
                                       f"groups: {', '.join(groups())}")
        missing = unknown_key(key)
        if missing is not None:
            raise _unknown_key_error(line, *missing, groups=groups)
        if not (override.is_delete() or override.is_sweep_override()):
            _check_type(schema, key, override.value())


def _unknown_key_error(line: str, name: str, valid: list[str],
                       groups: typing.Callable[[], list[str]]) -> UnknownOverrideError:
    parent, _, last = name.rpartition(".")
    what = f"{name} is not a config key"
    if not valid:
        return UnknownOverrideError(line, name, what, f"{parent} is a value, not a config node")
    close = difflib.get_close_matches(last, valid, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    if not parent:
        return UnknownOverrideError(line, name, what, f"{hint}valid: top-level keys "
                                    f"({', '.join(valid)}) and groups ({', '.join(groups())})")
    return UnknownOverrideError(line, name, what, f"{hint}keys of {parent}: {', '.join(valid)}")


def _check_type(schema: Any, key: str, value: Any) -> None:
    """A value the key's type cannot hold (``model.d_model=big``, ``dist.strategy=fdsp``)."""
    from omegaconf.errors import ValidationError

    try:
        OmegaConf.update(schema, key, value, merge=True)
    except ValidationError as e:
        reason = str(e).splitlines()[0]
        raise ConfigError(key, value, reason[:1].lower() + reason[1:]) from None


def check_command_line(argv: list[str]) -> None:
    """run.py's command line, before Hydra composes anything: one line and exit 2 if an override
    names an unknown key or group option (nothing is written; no run directory is made)."""
    from hydra._internal.utils import get_args_parser

    args, rest = get_args_parser().parse_known_args(argv)
    overrides = [*args.overrides, *(a for a in rest if not a.startswith("-"))]
    try:
        check_overrides(overrides, [args.config_dir] if args.config_dir else None)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
