"""The report's scaling section: where a sweep declares its rung keys
(``hydra.callbacks.sweep_report.rungs``), each arm's final validation loss is fitted against
training compute (:mod:`olmo_exp.sweep.scaling_fit`) and compared with the baseline arm by the
compute multiplier; with a budget key (``...budget``), isoFLOP parabolas per budget
(:mod:`olmo_exp.sweep.isoflop_fit`). ``report.md`` gets the tables, ``report_scaling.csv`` the
numbers (one per row), ``report.png`` the loss-vs-compute panel (:mod:`olmo_exp.sweep.scaling_plot`).

A job's compute is FLOPs per token (``model_summary.json``'s ``flops_per_token``: olmo-core's
count for the built model at the run's sequence length, attention included) times the tokens it
trained (its last step x global batch size x sequence length), not 6N.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from olmo_exp.base.files import atomic_path
from olmo_exp.runtime.console import VAL_LOSS
from olmo_exp.sweep import rungs as ladder
from olmo_exp.sweep.arms import seed_of
from olmo_exp.sweep.jobs import JobData

if TYPE_CHECKING:
    from pathlib import Path

    from olmo_exp.sweep.arm_report import ReportSettings
    from olmo_exp.sweep.isoflop_fit import IsoflopFit
    from olmo_exp.sweep.scaling_fit import ArmFit, Multiplier, Rung

N_BOOT = 1000
SIZE = "non_embedding_params"
"""isoFLOP's N: non-embedding parameters. At ladder sizes the embedding (vocab x d_model) is most
of the total and barely changes with depth, so the total would hide the size axis."""


def job_compute(d: JobData) -> float | None:
    """Training FLOPs of a job so far: flops_per_token x last step x tokens per step."""
    if d.row.flops_per_token is None or d.row.step is None or not d.curve_tokens_per_step:
        return None
    return float(d.row.flops_per_token) * d.row.step * d.curve_tokens_per_step


def _final_loss(d: JobData) -> float | None:
    losses = [r[VAL_LOSS] for r in d.metrics if VAL_LOSS in r]
    return float(losses[-1]) if losses else None


@dataclass
class Cell:
    """The jobs of one arm at one rung (and budget)."""

    rung: str
    budget: float | None
    losses: dict[int | None, float] = field(default_factory=dict)
    computes: list[float] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)
    jobs: int = 0


@dataclass
class ScalingReport:
    settings: ReportSettings
    arms: list[str]
    """Arm labels, in order of first appearance."""
    baseline: str | None
    cells: dict[str, list[Cell]]
    fits: dict[str, ArmFit] = field(default_factory=dict)
    multipliers: dict[str, list[Multiplier]] = field(default_factory=dict)
    isoflop: dict[str, IsoflopFit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """One line each: what could not be fitted or compared, and why (no numbers)."""


def _labels(arm_keys: list[tuple[str, ...]]) -> list[str]:
    sets = [set(k) for k in arm_keys]
    common = set.intersection(*sets) if sets else set()
    return [" ".join(o for o in k if o not in common) or "(common overrides only)"
            for k in arm_keys]


def _baseline(arm_keys: list[tuple[str, ...]], labels: list[str], baseline: list[str] | None
              ) -> str | None:
    if not baseline:
        return labels[0] if labels else None
    wanted = {o.lstrip("+") for o in baseline}
    found = [label for key, label in zip(arm_keys, labels, strict=True)
             if wanted <= {o.lstrip("+") for o in key}]
    return found[0] if len(found) == 1 else None


def collect(data: Sequence[JobData], settings: ReportSettings) -> ScalingReport:
    """Jobs grouped by arm and rung: the finished seeds' final losses, computes and sizes."""
    by_arm: dict[tuple[str, ...], dict[tuple[float | None, str], Cell]] = {}
    for d in data:
        key = tuple(sorted(o.lstrip("+") for o in ladder.arm_overrides(
            d.all_overrides, settings.rungs, settings.budget)))
        rung = ladder.rung_name(d.all_overrides, settings.rungs)
        budget = ladder.budget_of(d.all_overrides, settings.budget) if settings.budget else None
        cell = by_arm.setdefault(key, {}).setdefault((budget, rung), Cell(rung, budget))
        cell.jobs += 1
        loss, compute = _final_loss(d), job_compute(d)
        if d.row.status != "finished" or loss is None or not math.isfinite(loss):
            continue
        cell.losses[seed_of(d.all_overrides)] = loss
        cell.computes.append(compute if compute is not None else math.nan)
        size = getattr(d.row, SIZE)
        cell.sizes.append(float(size) if size is not None else math.nan)
    keys = list(by_arm)
    labels = _labels(keys)
    report = ScalingReport(settings=settings, arms=labels,
                           baseline=_baseline(keys, labels, settings.baseline),
                           cells={label: list(by_arm[k].values())
                                  for k, label in zip(keys, labels, strict=True)})
    if report.baseline is None and labels:
        report.notes.append("no fit comparison: the baseline overrides select no single arm")
    return report


def _unfinished(arm: str, cells: list[Cell]) -> str:
    missing = [c.rung for c in cells if not c.losses]
    if missing:
        return (f"can't fit `{arm}`: rung `{missing[0]}` has no finished seed"
                + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if any(not all(map(math.isfinite, c.computes)) for c in cells):
        return f"can't fit `{arm}`: a finished job has no compute (model_summary.json or steps)"
    return ""


def _rung(cell: Cell, x: float) -> Rung:
    from olmo_exp.sweep.scaling_fit import Rung

    return Rung(cell.rung, x, dict(cell.losses))


def build(data: Sequence[JobData], settings: ReportSettings, n_boot: int = N_BOOT
          ) -> ScalingReport | None:
    """The scaling section's fits; None when the sweep declares no rung keys."""
    if not settings.rungs:
        return None
    from olmo_exp.sweep.scaling_fit import ArmFit, fit_arm, multipliers, reference_compute

    report = collect(data, settings)
    if settings.budget:
        return _build_isoflop(report, n_boot)
    finished = [c for cells in report.cells.values() for c in cells if c.losses]
    computes = [x for c in finished for x in c.computes if math.isfinite(x) and x > 0]
    c_ref = reference_compute(computes) if computes else 1.0
    for arm, cells in report.cells.items():
        problem = _unfinished(arm, cells)
        if problem:
            report.fits[arm] = ArmFit(arm=arm, rungs=[], problem=problem)
        else:
            rungs = [_rung(c, sum(c.computes) / len(c.computes)) for c in cells]
            report.fits[arm] = fit_arm(arm, rungs, n_boot, settings.confidence, c_ref=c_ref)
    report.notes += [f.problem or f.warning for f in report.fits.values()
                     if f.problem or f.warning]
    if report.baseline is None:
        return report
    base = report.fits[report.baseline]
    for arm, fit in report.fits.items():
        if arm == report.baseline:
            continue
        report.multipliers[arm], note = multipliers(fit, base, settings.confidence)
        if note and fit.law is not None:  # an arm without a fit has its own line already
            report.notes.append(note)
    return report


def _build_isoflop(report: ScalingReport, n_boot: int) -> ScalingReport:
    from olmo_exp.sweep.isoflop_fit import IsoPoint, fit_isoflop

    for arm, cells in report.cells.items():
        missing = {c.budget for c in cells if not c.losses}
        for budget in sorted(b for b in missing if b is not None):
            report.notes.append(f"`{arm}`: a size at budget {budget:.3g} FLOPs has no finished "
                                "seed; that budget is left out")
        points = [IsoPoint(c.budget, _rung(c, sum(c.sizes) / len(c.sizes))) for c in cells
                  if c.losses and c.budget not in missing and all(map(math.isfinite, c.sizes))]
        fit = fit_isoflop(arm, points, n_boot, report.settings.confidence)
        report.isoflop[arm] = fit
        if fit.problem:
            report.notes.append(fit.problem)
    return report


# -- report.md ----------------------------------------------------------------------------------


def _g(x: float | None, fmt: str = ".3g") -> str:
    if x is None:
        return "–"
    return "∞" if math.isinf(x) else format(x, fmt)


def _ci(ci: tuple[float, float] | None, fmt: str = ".3g") -> str:
    return "" if ci is None else f" [{_g(ci[0], fmt)}, {_g(ci[1], fmt)}]"


def markdown(report: ScalingReport | None) -> str:
    if report is None:
        return ""
    s = report.settings
    keys = ", ".join(f"`{k}`" for k in s.rungs) + (f" and the budget key `{s.budget}`"
                                                    if s.budget else "")
    pct = f"{s.confidence:.0%}"
    lines = ["", "", "## Scaling", "",
             f"Arms: the jobs' overrides minus `train.seed` and the rung keys ({keys}). Only "
             "finished jobs count. Compute: FLOPs per token (model_summary.json) x tokens "
             f"trained. Intervals: {pct} percentile bootstrap over seeds ({N_BOOT} resamples; "
             "each rung's seeds resampled with replacement, every fit redone). docs/scaling.md "
             "explains the fits."]
    if report.baseline is not None:
        lines.append(f"Baseline arm: `{report.baseline}`.")
    lines.append("")
    lines += _isoflop_md(report, pct) if s.budget else _ladder_md(report, pct)
    if report.notes:
        lines += [""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines)


def _ladder_md(report: ScalingReport, pct: str) -> list[str]:
    fitted = [f for f in report.fits.values() if f.law is not None]
    if not fitted:  # the notes say why
        return []
    c_ref = fitted[0].law.c_ref
    lines = [f"Per arm: L(C) = E + A·(C / {_g(c_ref, '.0e')} FLOPs)^(−α), fitted to the final "
             "validation loss of every finished seed at every rung.", "",
             f"| arm | rungs | seeds | compute range (FLOPs) | E [{pct} CI] | A [{pct} CI] | "
             f"α [{pct} CI] |", "|---|---|---|---|---|---|---|"]
    for arm, fit in report.fits.items():
        if fit.law is None:
            continue
        lo, hi = fit.compute_range
        seeds = "/".join(str(len(r.losses)) for r in fit.rungs)
        cis = fit.cis
        lines.append(f"| `{arm}`{' (baseline)' if arm == report.baseline else ''} | "
                     f"{len(fit.rungs)} | {seeds} | {lo:.3g} – {hi:.3g} | "
                     f"{_g(fit.law.E, '.4f')}{_ci(cis.get('E'), '.4f')} | "
                     f"{_g(fit.law.A, '.4f')}{_ci(cis.get('A'), '.4f')} | "
                     f"{_g(fit.law.alpha, '.3f')}{_ci(cis.get('alpha'), '.3f')} |")
    lines += [f"- `{f.arm}`: {f.ci_problem}" for f in fitted if f.ci_problem]
    if not any(report.multipliers.values()):
        return lines
    lines += ["", "Compute multiplier k(C) = C_baseline(L_arm(C)) / C: the baseline needs k times "
              "the compute to reach the loss the arm reaches with C (k > 1: the arm is better). "
              f"Verdict: *better*/*worse* when the {pct} interval excludes 1, *within noise* "
              "otherwise. *Extrapolated*: outside the fitted compute range of the arm or the "
              "baseline.", "",
              f"| arm | rung | compute (FLOPs) | k [{pct} CI] | verdict | note |",
              "|---|---|---|---|---|---|"]
    for arm, ks in report.multipliers.items():
        for m in ks:
            k = "–" if m.k is None else f"{m.k:.3f}{_ci(m.ci, '.3f')}"
            if m.largest and m.k is not None:
                k = f"**{k}**"
            lines.append(f"| `{arm}` | `{m.at}`{' (largest)' if m.largest else ''} | "
                         f"{m.compute:.3g} | {k} | {m.verdict} | {m.note} |")
    return lines


def _isoflop_md(report: ScalingReport, pct: str) -> list[str]:
    lines = ["Per arm and budget: a parabola of the final validation loss in log N (N: "
             "non-embedding parameters, model_summary.json), its vertex N* and L*; then "
             "N* = a·C^b over the budgets (Chinchilla's approach 2).", "",
             f"| arm | budget (FLOPs) | sizes | N* [{pct} CI] | L* [{pct} CI] | note |",
             "|---|---|---|---|---|---|"]
    for arm, fit in report.isoflop.items():
        for b in fit.budgets:
            lines.append(f"| `{arm}` | {b.budget:.3g} | {len(b.points)} | "
                         + (f"{_g(b.n_opt)}{_ci(b.n_ci)} | {_g(b.loss_opt, '.4f')}"
                            f"{_ci(b.loss_ci, '.4f')}" if b.n_opt is not None else "– | –")
                         + f" | {b.problem or b.note} |")
    laws = [f for f in report.isoflop.values() if f.a is not None]
    if laws:
        lines += ["", f"| arm | budgets | a [{pct} CI] | b [{pct} CI] |", "|---|---|---|---|"]
        for f in laws:
            n = sum(b.n_opt is not None for b in f.budgets)
            lines.append(f"| `{f.arm}` | {n} | {_g(f.a)}{_ci(f.a_ci)} | "
                         f"{_g(f.b, '.3f')}{_ci(f.b_ci, '.3f')} |")
        lines += [f"- `{f.arm}`: {f.ci_problem}" for f in laws if f.ci_problem]
    return lines


# -- report_scaling.csv -------------------------------------------------------------------------

CSV_COLUMNS = ["kind", "arm", "baseline", "rung", "budget", "compute", "name", "value", "ci_low",
               "ci_high", "verdict", "note"]


def rows(report: ScalingReport) -> list[dict[str, Any]]:
    """One row per number (long format); the notes as rows of their own."""
    out: list[dict[str, Any]] = []

    def add(kind: str, arm: str, **values: Any) -> None:
        out.append({"kind": kind, "arm": arm, "baseline": report.baseline, **values})

    for arm, fit in report.fits.items():
        for r in fit.rungs:
            add("rung", arm, rung=r.name, compute=r.compute, name="n_seeds", value=len(r.losses))
        if fit.law is not None:
            for name in ("E", "A", "alpha", "c_ref"):
                ci = fit.cis.get(name) or (None, None)
                add("law", arm, name=name, value=getattr(fit.law, name), ci_low=ci[0],
                    ci_high=ci[1], note=fit.warning or fit.ci_problem)
    for arm, ks in report.multipliers.items():
        for m in ks:
            ci = m.ci or (None, None)
            add("multiplier", arm, rung=m.at, compute=m.compute,
                name="k_largest" if m.largest else "k", value=m.k, ci_low=ci[0],
                ci_high=ci[1], verdict=m.verdict, note=m.note)
    for arm, fit in report.isoflop.items():
        for b in fit.budgets:
            for name, value, ci in (("n_opt", b.n_opt, b.n_ci), ("loss_opt", b.loss_opt,
                                                                   b.loss_ci)):
                ci = ci or (None, None)
                add("isoflop", arm, budget=b.budget, name=name, value=value, ci_low=ci[0],
                    ci_high=ci[1], note=b.problem or b.note)
        if fit.a is not None:
            for name, value, ci in (("a", fit.a, fit.a_ci), ("b", fit.b, fit.b_ci)):
                ci = ci or (None, None)
                add("isoflop_power_law", arm, name=name, value=value, ci_low=ci[0],
                    ci_high=ci[1], note=fit.ci_problem)
    for note in report.notes:
        add("note", "", note=note)
    return out


def write_csv(report: ScalingReport | None, path: Path) -> None:
    """``report_scaling.csv``; none (an old one removed) when the sweep declares no rungs."""
    if report is None:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows(report):
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
