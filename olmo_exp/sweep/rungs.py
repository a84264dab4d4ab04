"""A ladder's axes: the override keys that change scale (``hydra.callbacks.sweep_report.rungs``)
and, in isoFLOP mode, the one whose value is a job's compute budget in FLOPs
(``hydra.callbacks.sweep_report.budget``). An arm is a job's overrides minus ``train.seed``, the
rung keys and the budget key; a rung is the rung keys' values. Arms are compared with the
baseline arm at the same rung (and budget). Plain python: the sweep's checks import it before
any job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError
from olmo_exp.sweep.arms import SEED_KEY

if TYPE_CHECKING:
    from olmo_exp.sweep.arms import ArmStats

RUNGS_KEY = "hydra.callbacks.sweep_report.rungs"
BUDGET_KEY = "hydra.callbacks.sweep_report.budget"


def _split(override: str) -> tuple[str, str | None]:
    key, sep, value = override.partition("=")
    return key.lstrip("+~"), (value if sep else None)


def axis_keys(rungs: Sequence[str], budget: str | None) -> list[str]:
    return [*rungs, *([budget] if budget else [])]


def rung_name(overrides: Sequence[str], rungs: Sequence[str]) -> str:
    """``key=value`` of every rung key the overrides set, in the declared order: the rung."""
    values = {}
    for override in overrides:
        key, value = _split(override)
        if key in rungs and value is not None:
            values[key] = value
    return " ".join(f"{k}={values[k]}" for k in rungs if k in values)


def budget_of(overrides: Sequence[str], budget: str) -> float | None:
    for override in reversed(overrides):
        key, value = _split(override)
        if key == budget and value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def arm_overrides(overrides: Sequence[str], rungs: Sequence[str], budget: str | None
                  ) -> tuple[str, ...]:
    """The overrides minus the seed, the rung keys and the budget key: what makes the arm."""
    axes = {SEED_KEY, *axis_keys(rungs, budget)}
    return tuple(o for o in overrides if _split(o)[0] not in axes)


def partitions(arms: Sequence[ArmStats], rungs: Sequence[str], budget: str | None
               ) -> list[list[ArmStats]]:
    """Arms grouped (as :func:`olmo_exp.sweep.arms.group_arms` does, over the seed) split by
    rung and budget: each part holds the arms to compare with the baseline of the same rung.
    Without declared axes: one part, every arm."""
    keys = axis_keys(rungs, budget)
    if not keys:
        return [list(arms)]
    parts: dict[str, list[ArmStats]] = {}
    for arm in arms:
        parts.setdefault(rung_name(arm.overrides, keys), []).append(arm)
    return list(parts.values())


def parse(node: dict[str, Any] | None) -> tuple[list[str], str | None]:
    """(rungs, budget) from the callback's settings; a wrong type is a one-line error."""
    node = node or {}
    rungs = node.get("rungs") or []
    if isinstance(rungs, str):
        rungs = rungs.split(",") if "," in rungs else [rungs]
    if not isinstance(rungs, list) or not all(isinstance(k, str) and k for k in rungs):
        raise ConfigError(RUNGS_KEY, rungs, "a list of override keys that change scale, e.g. "
                          "[model.d_model,model.n_layers]")
    budget = node.get("budget")
    if budget is not None and not (isinstance(budget, str) and budget):
        raise ConfigError(BUDGET_KEY, budget, "null or the override key whose value is a job's "
                          "compute budget in FLOPs")
    return [k.lstrip("+") for k in rungs], (budget.lstrip("+") if budget else None)


def check(rungs: Sequence[str], budget: str | None, jobs: Sequence[Sequence[str]]) -> None:
    """Before any job starts: every declared key is one the sweep's jobs override (a typo would
    otherwise merge rungs into arms), none is the seed, and every job's budget is a positive
    number of FLOPs."""
    overridden: list[str] = []
    for job in jobs:
        for override in job:
            key, value = _split(override)
            if value is not None and key not in overridden:
                overridden.append(key)
    choices = ", ".join(k for k in overridden if k != SEED_KEY) or "(none)"
    for key in rungs:
        if key == SEED_KEY or key == budget:
            raise ConfigError(RUNGS_KEY, list(rungs), f"{key} is an axis of its own; "
                              f"the rung keys are those that change size, among: {choices}")
        if key not in overridden:
            raise ConfigError(RUNGS_KEY, list(rungs), f"no job overrides {key}; the jobs "
                              f"override: {choices}")
    if budget is None:
        return
    if not rungs:
        raise ConfigError(BUDGET_KEY, budget, f"isoFLOP mode needs {RUNGS_KEY}: the keys that "
                          f"vary model size within a budget, among: {choices}")
    for job in jobs:
        value = budget_of(job, budget)
        if value is None or not value > 0:
            given = next((_split(o)[1] for o in job if _split(o)[0] == budget), None)
            raise ConfigError(BUDGET_KEY, budget, f"every job must set {budget} to a positive "
                              f"number of FLOPs; job [{' '.join(job)}] has {given!r}")
