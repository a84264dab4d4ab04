"""The command line's overrides, checked before Hydra composes anything.

Hydra rejects a plain ``key=v`` for an unknown key, but ``+``/``++`` add keys even to structured
configs, where they would be saved and silently ignored; and a misspelt group option gives a long
Hydra error. Here every form fails with one line, a "did you mean" (difflib) and exit code 2. So do
what Hydra answers with several lines and a pointer to ``HYDRA_FULL_ERROR``: a sweep value without
``-m``, an override its grammar can't parse (the line shows the quoted form), and a misspelt
setting of the sweep report (``hydra.callbacks.sweep_report.*``).
"""

from __future__ import annotations

import difflib
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import CONF_DIR
from olmo_exp.config.run import RunConfig


class UnknownOverrideError(ConfigError):
    """An override names a key or a group option that the structured configs do not have."""

    def __init__(self, override: str, key: str, what: str, valid: str):
        ValueError.__init__(self, f"{override}: {what}; {valid}")
        self.key, self.value, self.valid = key, override, valid


class OverrideFormError(UnknownOverrideError):
    """An override Hydra can't take as written: a sweep without -m, or a value its grammar rejects."""


REPORT_NODE = "hydra.callbacks.sweep_report"


def report_settings() -> list[str]:
    """The sweep report's settings: those ``conf/config.yaml`` declares (Hydra refuses others)."""
    node = OmegaConf.load(CONF_DIR / "config.yaml").hydra.callbacks.sweep_report
    return [str(k) for k in node if k != "_target_"]


def _report_setting_error(line: str, key: str) -> UnknownOverrideError | None:
    """A misspelt ``hydra.callbacks.sweep_report.*`` setting (Hydra: "Key ... is not in struct")."""
    setting = key[len(REPORT_NODE) + 1:].split(".")[0]
    settings = report_settings()
    if setting in settings:
        return None
    close = difflib.get_close_matches(setting, settings, n=1)
    hint = f"did you mean {REPORT_NODE}.{close[0]}? " if close else ""
    return UnknownOverrideError(line, key, f"{setting} is not a sweep report setting",
                                f"{hint}settings: {', '.join(settings)}")


def _quoted(override: str) -> str | None:
    """The override with its value (or each list item) in double quotes, shell-quoted; None if
    Hydra can't parse that either."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    key, sep, value = override.partition("=")
    if not sep:
        return None
    if value.startswith("[") and value.endswith("]"):
        items = [i.strip().strip("\"'") for i in value[1:-1].split(",") if i.strip()]
        value = "[" + ",".join(f'"{i}"' for i in items) + "]"
    else:
        value = '"' + value.strip("\"'") + '"'
    fixed = f"{key}={value}"
    try:
        OverridesParser.create().parse_overrides([fixed])
    except HydraException:
        return None
    return f"'{fixed}'"


def _unparsable(overrides: list[str]) -> UnknownOverrideError | None:
    """The first override Hydra's grammar rejects, as one line with the quoted form."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for override in overrides:
        try:
            OverridesParser.create().parse_overrides([override])
        except HydraException as e:
            key = override.partition("=")[0].lstrip("+~")
            if key.startswith(REPORT_NODE + "."):  # the setting's name first: quoting won't fix it
                error = _report_setting_error(override, key)
                if error is not None:
                    return error
            lines = [line for line in str(e).splitlines()
                     if line and "hydra.cc" not in line and not line.startswith("Error parsing")]
            reason = f" ({lines[0]})" if lines else ""
            fixed = _quoted(override)
            valid = (f"quote the value (list items one by one): {fixed}" if fixed else
                     "quote values that hold = [ ] , ( ) or spaces, e.g. 'key=\"a=b\"'")
            return OverrideFormError(override, override.partition("=")[0],
                                     f"Hydra cannot parse this override{reason}", valid)
    return None


def unknown_key(key: str) -> tuple[str, list[str]] | None:
    """None if ``key`` (dotted) exists in the structured RunConfig, else (the part that does not
    exist, the keys valid at that place). OmegaConf's struct mode decides: setting the key on the
    schema raises for a key the dataclasses don't have."""
    schema = OmegaConf.structured(RunConfig)
    try:
        OmegaConf.update(schema, key, MISSING, merge=True)
    except (ConfigAttributeError, ConfigKeyError) as e:
        missing = str(e.full_key)
        parent = missing.rpartition(".")[0]
        node = OmegaConf.select(schema, parent) if parent else schema
        return missing, [str(k) for k in node] if isinstance(node, DictConfig) else []
    except ValidationError as e:  # a key below a value (model.d_model.x)
        value_key = str(e.full_key)
        return ".".join(key.split(".")[: value_key.count(".") + 2]), []
    except (AssertionError, OmegaConfBaseException):
        return None  # an item of a list or of a null container: a value, type-checked later
    return None


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
        error = _unparsable(list(overrides))
        if error is not None:
            raise error from None
        raise
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
        if key.startswith(REPORT_NODE + "."):
            error = _report_setting_error(line, key)
            if error is not None:
                raise error
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


def check_argv(argv: list[str]) -> None:
    """run.py's command line (flags and overrides), before Hydra composes anything: a ConfigError
    for an override that names an unknown key or group option, can't be parsed, or sweeps
    without ``-m``."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, rest = get_args_parser().parse_known_args(argv)
    overrides = [*args.overrides, *(a for a in rest if not a.startswith("-"))]
    check_overrides(overrides, [args.config_dir] if args.config_dir else None)
    if not args.multirun:
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                line = override.input_line or override.key_or_group
                shown = " ".join(shlex.quote(a) for a in argv)
                raise OverrideFormError(
                    line, override.key_or_group, "several values are a sweep",
                    f"add -m to run one job per value: python run.py -m {shown}")


def check_command_line(argv: list[str]) -> None:
    """:func:`check_argv`, as run.py reports it: one line and exit 2 (nothing is written; no run
    directory is made)."""
    try:
        check_argv(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
