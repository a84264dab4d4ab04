"""The report's arm table: a sweep's jobs grouped over ``train.seed`` (:mod:`olmo_exp.sweep.arms`),
each arm compared with the baseline arm the preset names, paired by seed.

Settings come from the sweep's own config, ``hydra.callbacks.sweep_report`` (a preset sets them,
the command line overrides them; Hydra saves them in the sweep dir's ``multirun.yaml``):

- ``baseline``: overrides that select the baseline arm, e.g. ``["model=match_uniform"]``;
  null = the first arm;
- ``last_k``: the "mean of the last k evaluations" statistic (less noisy than the last one);
- ``confidence``: of every interval (0.95).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import atomic_path
from olmo_exp.runtime.console import VAL_LOSS, VAL_PPL
from olmo_exp.sweep import rungs as ladder
from olmo_exp.sweep.arms import (
    MISSING,
    NA,
    ArmStats,
    PairedDiff,
    arm_id,
    arm_table_markdown,
    baseline_arm,
    compare,
    group_arms,
    last_k_mean,
)
from olmo_exp.sweep.jobs import JobData

if TYPE_CHECKING:
    from pathlib import Path

FINAL = "val loss"
# What an arm panel's x axis can be (a report row's field: its title), in order of preference
# when the sweep names none: the first that differs between arms.
COSTS = {"kv_cache_bytes_per_token": "KV-cache bytes per token (bf16)",
         "flops_per_token": "training FLOPs per token",
         "params": "parameters"}


VALID = {"last_k": "an integer >= 1 (the number of last evaluations averaged, e.g. 3)",
         "confidence": "a fraction between 0 and 1 (e.g. 0.95 for a 95% interval)"}
IN_RANGE = {"last_k": lambda k: k >= 1, "confidence": lambda c: 0 < c < 1}


@dataclass
class ReportSettings:
    baseline: list[str] | None = None
    last_k: int = 3
    confidence: float = 0.95
    matched: list[str] = field(default_factory=list)
    """model_summary.json keys on which every arm must match the baseline arm (checked before
    any job starts, :func:`olmo_exp.sweep.match.check_arms`)."""
    cost: str | None = None
    """report.png's arm panel x axis (a key of COSTS); null = the first of them that differs
    between arms. A preset names the cost its question is about."""
    rungs: list[str] = field(default_factory=list)
    """Override keys that change scale: arms are compared rung by rung, and fitted against
    training compute (:mod:`olmo_exp.sweep.scaling_report`)."""
    budget: str | None = None
    """isoFLOP mode: the override key whose value is a job's compute budget in FLOPs."""
    axis_error: ConfigError | None = None

    @classmethod
    def from_callback(cls, node: dict[str, Any] | None) -> ReportSettings:
        """The settings of ``hydra.callbacks.sweep_report``: an absent or null setting takes its
        default; a last_k or confidence that is no number in range raises (ConfigError, the
        value as typed), the others are checked by :meth:`check`."""
        node = node or {}
        baseline = node.get("baseline")
        if isinstance(baseline, str):
            baseline = baseline.split()
        matched = node.get("matched") or []
        if isinstance(matched, str):
            matched = [matched]
        try:
            rungs, budget, error = *ladder.parse(node), None
        except ConfigError as e:  # raised by check(), before any job starts
            rungs, budget, error = [], None, e
        settings = cls(baseline=[str(o) for o in baseline] if baseline else None,
                       matched=[str(m) for m in matched],
                       cost=str(node["cost"]) if node.get("cost") else None,
                       rungs=rungs, budget=budget, axis_error=error)
        for name, kind in (("last_k", int), ("confidence", float)):
            value = node.get(name)
            if value is None:
                continue
            try:
                number = kind(value)
                # 2.5 is no last_k, True no confidence
                if isinstance(value, bool) or number != float(value) or not IN_RANGE[name](number):
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(f"hydra.callbacks.sweep_report.{name}", value,
                                  VALID[name]) from None
            setattr(settings, name, number)
        return settings

    def check(self) -> None:
        """One line naming the setting, its value and what is valid, before any job starts."""
        if self.axis_error is not None:
            raise self.axis_error
        key = "hydra.callbacks.sweep_report."
        for name in ("last_k", "confidence"):
            if not IN_RANGE[name](getattr(self, name)):
                raise ConfigError(key + name, getattr(self, name), VALID[name])
        if self.cost is not None and self.cost not in COSTS:
            raise ConfigError(key + "cost", self.cost,
                              f"one of {', '.join(COSTS)} or null (the first that differs)")

    @property
    def last_k_name(self) -> str:
        return f"val loss, mean of last {self.last_k} evals"


def eval_records(metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in metrics if VAL_LOSS in r]


def extra_eval_metrics(metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Every ``eval/...`` value of the last evaluation other than the validation CE loss and
    perplexity (bits per byte, downstream task scores, other validation sets...). The sizes of
    the evaluated set (``.../tokens``, ``.../bytes``) are the same for every job: not a result."""
    evals = [r for r in metrics if any(k.startswith("eval/") for k in r)]
    if not evals:
        return {}
    return {k: float(v) for k, v in evals[-1].items()
            if k.startswith("eval/") and k not in (VAL_LOSS, VAL_PPL)
            and not k.endswith(("/tokens", "/bytes")) and isinstance(v, (int, float))}


def job_metrics(data: JobData, settings: ReportSettings) -> dict[str, float | None]:
    losses = [float(r[VAL_LOSS]) for r in eval_records(data.metrics)]
    return {FINAL: losses[-1] if losses else None,
            settings.last_k_name: last_k_mean(losses, settings.last_k),
            **extra_eval_metrics(data.metrics)}


@dataclass
class ArmReport:
    arms: list[ArmStats]
    baseline: ArmStats | None
    diffs: list[PairedDiff]
    metric_names: list[str]
    """Those compared with the baseline (validation loss: final, mean of the last k)."""
    extra_names: list[str]
    """Other evaluation metrics: mean ± std and CI per arm, no verdict (better may be higher)."""
    settings: ReportSettings
    job_arm: dict[int, ArmStats] = field(default_factory=dict)
    """Each job's arm, by job number."""
    problem: str = ""
    """Why there is no comparison (a baseline that selects no arm), shown in report.md."""
    cost: str | None = None
    """The cost the arms are compared on (a key of COSTS): the arm table's cost column and the arm
    panel's x axis; None when the arms don't differ in any."""
    arm_cost: dict[str, Any] = field(default_factory=dict)
    """Each arm's value of that cost (its jobs' model_summary.json), by arm label."""
    few_evals: int = 0
    """Finished jobs with fewer than last_k evaluations (their last-k statistic is empty)."""


def cost_axis(data: Sequence[JobData], job_arm: dict[int, ArmStats],
              settings: ReportSettings) -> str | None:
    """The cost the sweep names (``hydra.callbacks.sweep_report.cost``), else the first of COSTS
    whose value differs between arms."""
    if settings.cost in COSTS:
        return settings.cost
    for key in COSTS:
        per_arm: dict[int, set[Any]] = {}
        for d in data:
            value = getattr(d.row, key)
            if value is not None and d.row.job in job_arm:
                per_arm.setdefault(id(job_arm[d.row.job]), set()).add(value)
        if len(per_arm) > 1 and len({v for vs in per_arm.values() for v in vs}) > 1:
            return key
    return None


def arm_report(data: Sequence[JobData], settings: ReportSettings) -> ArmReport:
    jobs = [{"overrides": d.all_overrides, "status": d.row.status,
             "metrics": job_metrics(d, settings)} for d in data]
    arms = group_arms(jobs, settings.confidence)
    names = [FINAL, settings.last_k_name]
    extra = sorted({k for a in arms for k in a.metrics} - set(names))
    report = ArmReport(arms, None, [], names, extra, settings)
    by_id = {arm_id(a.overrides): a for a in arms}
    report.job_arm = {d.row.job: by_id[arm_id(d.all_overrides)] for d in data}
    report.few_evals = sum(d.row.status == "finished" and job[settings.last_k_name] is None
                           for d, job in zip(data, (j["metrics"] for j in jobs), strict=True))
    report.cost = cost_axis(data, report.job_arm, settings)
    if report.cost is not None:
        for d in data:
            value = getattr(d.row, report.cost)
            if value is not None:
                report.arm_cost.setdefault(report.job_arm[d.row.job].label, value)
    if not arms:
        return report
    # A ladder compares each arm with the baseline arm of the same rung (and budget).
    parts = ladder.partitions(arms, settings.rungs, settings.budget)
    for part in parts:
        try:
            base = baseline_arm(part, settings.baseline)
        except ValueError as e:
            report.problem, report.diffs = str(e), []
            return report
        report.baseline = base if len(parts) == 1 else None
        for name in names:
            report.diffs += compare(part, base, name, settings.confidence)
    return report


def markdown(report: ArmReport) -> str:
    """The arm part of report.md: what the question needs first (arm, seeds, the cost, Δ vs the
    baseline with its CI, the verdict), the full statistics after it, and why a statistic is
    empty, once."""
    s = report.settings
    lines = [
        "## Arms (jobs that differ only in `train.seed`)",
        "",
        f"Δ = arm − baseline paired by seed, with its Student-t {s.confidence:.0%} CI; verdict: "
        "*better*/*worse* when the CI of Δ excludes 0, *within noise* otherwise, *n/a* with fewer "
        "than 2 paired seeds. Only finished jobs count.",
    ]
    if report.baseline is not None:
        lines.append(f"Baseline arm: `{report.baseline.label}`"
                     + (f" (`hydra.callbacks.sweep_report.baseline={json.dumps(s.baseline)}`)"
                        if s.baseline else " (the first arm: no baseline set)"))
    elif s.rungs or s.budget:
        keys = ", ".join(f"`{k}`" for k in ladder.axis_keys(s.rungs, s.budget))
        lines.append(f"Each arm is compared with the baseline arm at the same rung ({keys}): "
                     + (f"`{' '.join(s.baseline)}`" if s.baseline else "the first arm"))
    if report.problem:
        lines.append(f"**No comparison:** {report.problem}")
    lines += ["", lead_table(report), *[f"- {why}" for why in empty_reasons(report)], "",
              "### Full statistics",
              "",
              "Mean ± std over seeds, Student-t CI of the mean, per metric (also in "
              "`report_arms.csv`):",
              "", arm_table_markdown(report.arms, report.diffs, report.metric_names,
                                     s.confidence)]
    if report.extra_names:
        lines += ["", "Other evaluation metrics of the last evaluation (mean ± std over seeds):",
                  "", arm_table_markdown(report.arms, [], report.extra_names, s.confidence)]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _cost_text(value: Any) -> str:
    return MISSING if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def lead_table(report: ArmReport) -> str:
    """One row per arm: arm, seeds, the cost, the final validation loss, and per validation-loss
    statistic Δ vs baseline [CI] and the verdict; jobs left out of the statistics last."""
    pct = f"{report.settings.confidence:.0%}"
    by_arm = {(d.arm, d.metric): d for d in report.diffs}
    baselines = {d.baseline for d in report.diffs}  # a ladder: one per rung
    header = ["arm", "seeds"]
    if report.cost is not None:
        header.append(COSTS[report.cost])
    header.append(f"{FINAL} mean ± std")
    for m in report.metric_names:
        header += [f"Δ {m} [{pct} CI]", "verdict"]
    header.append("not in stats")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arm in report.arms:
        row = [arm.label.replace("|", "\\|"), str(arm.n_seeds)]
        if report.cost is not None:
            row.append(_cost_text(report.arm_cost.get(arm.label)))
        row.append(f"{_num(arm.mean(FINAL))} ± {_num(arm.std(FINAL))}")
        for m in report.metric_names:
            d = by_arm.get((arm.label, m))
            if arm is report.baseline or (d is None and arm.label in baselines):
                row += ["baseline", ""]
            elif d is None or d.mean_diff is None:
                row += [MISSING, d.verdict if d else ""]
            else:
                ci = MISSING if d.ci_low is None else f"[{_num(d.ci_low)}, {_num(d.ci_high)}]"
                row += [f"{_num(d.mean_diff)} {ci}", d.verdict]
        row.append(", ".join(f"{n} {what}" for n, what in (
            (arm.n_running, "running"), (arm.n_failed, "failed"), (arm.n_diverged, "diverged"),
            (arm.n_other, "not run")) if n))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def empty_reasons(report: ArmReport) -> list[str]:
    """Why a statistic of the tables is empty or has no verdict, each said once."""
    s, reasons = report.settings, []
    if report.few_evals:
        reasons.append(
            f"*{s.last_k_name}* is empty for {report.few_evals} finished job"
            f"{'s' if report.few_evals > 1 else ''}: fewer than {s.last_k} evaluations per job; "
            "set `hydra.callbacks.sweep_report.last_k` or evaluate more often "
            "(`train.eval_interval`).")
    if any(d.verdict == NA and d.n_pairs < 2 for d in report.diffs):
        reasons.append("*n/a*: fewer than 2 seeds that both the arm and the baseline finished: "
                       "no noise estimate; run 3 or more seeds (`train.seed=0,1,2`).")
    return reasons


ARM_CSV_COLUMNS = ["arm", "overrides", "baseline", "n_seeds", "seeds", "metric", "mean", "std",
                   "ci_low", "ci_high", "diff_vs_baseline", "diff_ci_low", "diff_ci_high",
                   "n_pairs", "p_value", "verdict", "n_running", "n_failed", "n_diverged"]


def write_csv(report: ArmReport, path: Path) -> None:
    """``report_arms.csv``: one row per arm and metric."""
    diffs = {(d.arm, d.metric): d for d in report.diffs}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ARM_CSV_COLUMNS)
        writer.writeheader()
        for arm in report.arms:
            for name in [*report.metric_names, *report.extra_names]:
                m = arm.metrics.get(name)
                d = diffs.get((arm.label, name))
                row: dict[str, Any] = {
                    "arm": arm.label, "overrides": " ".join(arm.overrides),
                    "baseline": arm is report.baseline, "n_seeds": arm.n_seeds,
                    "seeds": " ".join("default" if x is None else str(x) for x in arm.seeds),
                    "metric": name, "n_running": arm.n_running, "n_failed": arm.n_failed,
                    "n_diverged": arm.n_diverged,
                }
                if m is not None:
                    row.update(mean=m.mean, std=m.std, ci_low=m.ci_low, ci_high=m.ci_high)
                if d is not None:
                    row.update(diff_vs_baseline=d.mean_diff, diff_ci_low=d.ci_low,
                               diff_ci_high=d.ci_high, n_pairs=d.n_pairs, p_value=d.p_value,
                               verdict=d.verdict)
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
