"""Arms: a sweep's jobs grouped over the seed axis, with seed-paired comparisons to a baseline.

One job is one (config, seed). Everything but ``train.seed=...`` defines the arm; the seeds of an
arm are its replicates. A single run says nothing about noise, so per arm we report mean ± std
and a Student-t confidence interval, and compare arms to a baseline *paired by seed* (the same
seed means the same data order and init stream, so the per-seed difference cancels most of the
seed noise). Pure python + numpy + scipy: the report imports it without torch or Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEED_KEY = "train.seed"
COMPLETED = ("completed", "finished")
"""Statuses whose metrics enter the statistics ("finished" is report.JobRow's word for it)."""
BETTER, WORSE, WITHIN_NOISE, NA = "better", "worse", "within noise", "n/a"
MISSING = "–"
"""How a value that does not exist (std of one seed, CI of one pair) is shown."""

Seed = int | None
"""A job's seed; None: no ``train.seed`` override, i.e. the config's default seed (one seed)."""


# -- overrides ----------------------------------------------------------------------------------


def _split(override: str) -> tuple[str, str | None]:
    """(key without a leading ``+``/``++``, value or None): ``+x=1`` and ``x=1`` set the same key."""
    key, sep, value = override.partition("=")
    return key.lstrip("+"), (value if sep else None)


def _normalized(override: str) -> str:
    key, value = _split(override)
    return key if value is None else f"{key}={value}"


def arm_key(overrides: Sequence[str], seed_key: str = SEED_KEY) -> tuple[str, ...]:
    """The overrides minus the seed one, order kept: what makes two jobs the same arm."""
    return tuple(o for o in overrides if not (_split(o)[0] == seed_key and _split(o)[1] is not None))


def arm_id(overrides: Sequence[str], seed_key: str = SEED_KEY) -> tuple[str, ...]:
    """What two jobs of one arm share, whatever their overrides' order and ``+`` prefixes: their
    overrides minus the seed, normalized and sorted."""
    return tuple(sorted(_normalized(o) for o in arm_key(overrides, seed_key)))


def seed_of(overrides: Sequence[str], seed_key: str = SEED_KEY) -> int | None:
    """The seed a job's overrides set (the last one wins, as in Hydra); None when none does.

    A value that is not an integer raises: pairing by a guessed seed would compare wrong runs.
    """
    seed: int | None = None
    for override in overrides:
        key, value = _split(override)
        if key == seed_key and value is not None:
            try:
                seed = int(value)
            except ValueError:
                raise ValueError(f"{override!r}: the seed must be an integer") from None
    return seed


# -- statistics ---------------------------------------------------------------------------------


def last_k_mean(values: Sequence[float], k: int) -> float | None:
    """Mean of the last ``k`` values (less noisy than the last one alone); None when there are
    fewer than ``k``: a mean over a shorter window is a different statistic, not comparable."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(values) < k:
        return None
    return float(np.mean(np.asarray(values[-k:], dtype=float)))


def _t_half_width(std: float, n: int, confidence: float) -> float:
    from scipy import stats  # here, not at import: every run (a rejected config too) imports arms

    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))


def mean_ci(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float | None, float | None, float | None, float | None]:
    """(mean, sample std (ddof=1), CI low, CI high) with a Student-t interval for the mean.

    One value: (value, None, None, None), since one seed has no noise estimate; none: all None.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None, None, None
    mean = float(x.mean())
    if x.size == 1:
        return mean, None, None, None
    std = float(x.std(ddof=1))
    half = _t_half_width(std, x.size, confidence)
    return mean, std, mean - half, mean + half


@dataclass
class MetricStats:
    """One metric of one arm over its completed seeds."""

    values: dict[Seed, float]
    """Per seed (what the paired comparison uses); a seed run twice is averaged."""
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class ArmStats:
    """One arm: its overrides (seed removed), its completed seeds and per-metric statistics."""

    label: str
    """The arm's overrides that not every arm shares (what distinguishes it in a table)."""
    overrides: tuple[str, ...]
    n_seeds: int
    """Distinct seeds among the completed jobs."""
    seeds: list[Seed]
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    n_running: int = 0
    n_failed: int = 0
    n_diverged: int = 0
    """Jobs whose loss went NaN/inf: never averaged (one NaN would make every statistic NaN)."""
    n_other: int = 0
    """Jobs neither completed, running nor failed (not started, dry run): not in the statistics."""

    def mean(self, metric: str) -> float | None:
        return self.metrics[metric].mean if metric in self.metrics else None

    def std(self, metric: str) -> float | None:
        return self.metrics[metric].std if metric in self.metrics else None

    def ci(self, metric: str) -> tuple[float | None, float | None]:
        m = self.metrics.get(metric)
        return (m.ci_low, m.ci_high) if m else (None, None)


@dataclass
class PairedDiff:
    """Arm minus baseline on one metric, over the seeds both arms completed."""

    arm: str
    baseline: str
    metric: str
    n_pairs: int
    seeds: list[Seed]
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    """Two-sided paired t-test of "no difference" (ttest_1samp on the per-seed differences)."""
    verdict: str
    """better | worse | within noise | n/a (fewer than 2 pairs: no noise estimate)."""


def _seed_order(seed: Seed) -> tuple[bool, int]:
    return (seed is not None, seed or 0)


def paired_diff(
    arm_values: Mapping[Seed, float],
    base_values: Mapping[Seed, float],
    confidence: float = 0.95,
    lower_is_better: bool = True,
    *,
    arm: str = "",
    baseline: str = "",
    metric: str = "",
) -> PairedDiff:
    """Paired t comparison over the seeds present in both: the seed's own effect cancels out."""
    seeds = sorted(set(arm_values) & set(base_values), key=_seed_order)
    diffs = np.asarray([arm_values[s] - base_values[s] for s in seeds], dtype=float)
    result = PairedDiff(arm=arm, baseline=baseline, metric=metric, n_pairs=len(seeds), seeds=seeds,
                        mean_diff=float(diffs.mean()) if diffs.size else None,
                        ci_low=None, ci_high=None, p_value=None, verdict=NA)
    if diffs.size < 2:
        return result
    mean, _, lo, hi = mean_ci(diffs, confidence)
    assert mean is not None and lo is not None and hi is not None
    result.ci_low, result.ci_high = lo, hi
    if not np.isfinite(diffs).all():
        return result  # a diverged (nan/inf) run: no verdict
    if np.all(diffs == diffs[0]):
        # No spread: the t statistic is undefined (scipy gives nan), the difference is exact.
        result.p_value = 1.0 if mean == 0 else 0.0
    else:
        # ttest_rel(arm, base) is this test; on the differences themselves it is exact.
        from scipy import stats

        result.p_value = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    if hi < 0:
        result.verdict = BETTER if lower_is_better else WORSE
    elif lo > 0:
        result.verdict = WORSE if lower_is_better else BETTER
    else:
        result.verdict = WITHIN_NOISE
    return result


# -- arms ---------------------------------------------------------------------------------------


def _job_seed(job: Mapping[str, Any], seed_key: str) -> Seed:
    seed = job.get("seed")
    return int(seed) if seed is not None else seed_of(job["overrides"], seed_key)


def group_arms(
    jobs: Iterable[Mapping[str, Any]], confidence: float = 0.95, seed_key: str = SEED_KEY
) -> list[ArmStats]:
    """Jobs grouped into arms, in order of first appearance, with per-metric statistics.

    Each job: ``overrides`` (list of str), ``metrics`` ({name: value or None}), ``status``; an
    optional ``seed`` (e.g. the resolved config's) wins over the overrides. Only completed jobs
    enter the statistics (a running job's last value is not a final one); running, failed and
    diverged jobs are counted per arm. Arms match on their overrides whatever the order and ``+`` prefix.
    """
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for job in jobs:
        group = groups.setdefault(arm_id(job["overrides"], seed_key),
                                  {"overrides": arm_key(job["overrides"], seed_key), "completed": [], "running": 0,
                                   "failed": 0, "diverged": 0, "other": 0})
        status = job.get("status")
        if status in COMPLETED:
            group["completed"].append(job)
        elif status in ("running", "failed", "diverged"):
            group[status] += 1
        else:
            group["other"] += 1

    normalized = [{_normalized(o) for o in g["overrides"]} for g in groups.values()]
    common = set.intersection(*normalized) if normalized else set()
    arms = []
    for group in groups.values():
        label = " ".join(o for o in group["overrides"] if _normalized(o) not in common)
        per_metric: dict[str, dict[Seed, list[float]]] = {}
        seeds: set[Seed] = set()
        for job in group["completed"]:
            seed = _job_seed(job, seed_key)
            seeds.add(seed)
            for name, value in (job.get("metrics") or {}).items():
                if value is not None:
                    per_metric.setdefault(name, {}).setdefault(seed, []).append(float(value))
        metrics = {}
        for name, by_seed in per_metric.items():
            values = {s: float(np.mean(v)) for s, v in sorted(by_seed.items(),
                                                                key=lambda i: _seed_order(i[0]))}
            mean, std, lo, hi = mean_ci(list(values.values()), confidence)
            metrics[name] = MetricStats(values=values, mean=mean, std=std, ci_low=lo, ci_high=hi)
        ordered = sorted(seeds, key=_seed_order)
        arms.append(ArmStats(label=label or "(common overrides only)",
                             overrides=group["overrides"], n_seeds=len(ordered), seeds=ordered,
                             metrics=metrics, n_running=group["running"],
                             n_failed=group["failed"], n_diverged=group["diverged"],
                             n_other=group["other"]))
    return arms


def baseline_arm(arms: Sequence[ArmStats], baseline: Sequence[str] | None = None) -> ArmStats:
    """The arm whose overrides include every one of ``baseline`` (``+`` prefixes ignored); no
    baseline given: the first arm. None or several matching raise, naming the arms to pick from."""
    if not arms:
        raise ValueError("no arms: the sweep has no jobs")
    if not baseline:
        return arms[0]
    wanted = {_normalized(o) for o in baseline}
    matches = [a for a in arms if wanted <= {_normalized(o) for o in a.overrides}]
    if len(matches) == 1:
        return matches[0]
    available = "; ".join(f"[{' '.join(a.overrides) or '(no overrides)'}]" for a in arms)
    which = "no arm" if not matches else f"{len(matches)} arms"
    raise ValueError(f"baseline {' '.join(baseline)!r} matches {which}; "
                     f"give overrides that select exactly one of: {available}")


def compare(
    arms: Sequence[ArmStats],
    baseline_arm: ArmStats,
    metric: str,
    confidence: float = 0.95,
    lower_is_better: bool = True,
) -> list[PairedDiff]:
    """Every other arm against the baseline on ``metric``, paired by seed (arm order kept)."""
    base = baseline_arm.metrics.get(metric)
    base_values = base.values if base else {}
    diffs = []
    for arm in arms:
        if arm is baseline_arm:
            continue
        mine = arm.metrics.get(metric)
        diffs.append(paired_diff(mine.values if mine else {}, base_values, confidence,
                                 lower_is_better, arm=arm.label, baseline=baseline_arm.label,
                                 metric=metric))
    return diffs


# -- the table ----------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _ci(lo: float | None, hi: float | None) -> str:
    return MISSING if lo is None or hi is None else f"[{_num(lo)}, {_num(hi)}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def arm_table_markdown(
    arms: Sequence[ArmStats],
    diffs: Sequence[PairedDiff],
    metric_names: Sequence[str],
    confidence: float = 0.95,
) -> str:
    """One row per arm: seeds, mean ± std and CI per metric, Δ vs the baseline [CI] and verdict
    for each metric ``diffs`` covers (the baseline's own row says "baseline")."""
    pct = f"{confidence * 100:g}%"
    compared = [m for m in metric_names if any(d.metric == m for d in diffs)]
    by_arm = {(d.arm, d.metric): d for d in diffs}
    baselines = {d.baseline for d in diffs}
    header = ["arm", "seeds", "not in stats"]
    for m in metric_names:
        header += [f"{m} mean ± std", f"{m} {pct} CI"]
    for m in compared:
        header += [f"Δ {m} vs baseline [{pct} CI]", f"{m} verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arm in arms:
        excluded = [f"{n} {what}" for n, what in ((arm.n_running, "running"),
                                                   (arm.n_failed, "failed"),
                                                   (arm.n_diverged, "diverged"),
                                                   (arm.n_other, "not run"))
                    if n]
        row = [_cell(arm.label), str(arm.n_seeds), ", ".join(excluded)]
        for m in metric_names:
            row += [f"{_num(arm.mean(m))} ± {_num(arm.std(m))}", _ci(*arm.ci(m))]
        for m in compared:
            d = by_arm.get((arm.label, m))
            if d is None:
                row += ["baseline" if arm.label in baselines else MISSING, ""]
                continue
            pairs = f"{d.n_pairs} pair" + ("" if d.n_pairs == 1 else "s")
            row += [f"{_num(d.mean_diff)} {_ci(d.ci_low, d.ci_high)} ({pairs})", d.verdict]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
