"""A sweep's ``report.png``: every job's train and validation loss curves side by side, and each
arm's final validation loss (mean and CI over seeds) against what the sweep varies: KV-cache bytes
per token, FLOPs per token or parameters."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_exp.base.files import atomic_path
from olmo_exp.runtime.console import TRAIN_LOSS, VAL_LOSS
from olmo_exp.runtime.plots import curve
from olmo_exp.sweep.arm_report import COSTS, FINAL, ArmReport
from olmo_exp.sweep.arms import seed_of
from olmo_exp.sweep.jobs import JobData

if TYPE_CHECKING:  # the ladder's panel: only when the report has one
    from olmo_exp.sweep.scaling_report import ScalingReport

SEED_STYLES = ("-", "--", ":", "-.")
"""A job's line style: its seed's place among its arm's seeds (the colour is the arm's)."""


def arm_colors(arms: ArmReport) -> dict[int, str]:
    """One colour per arm, the same in every panel, by ``id`` of the arm."""
    return {id(arm): f"C{i % 10}" for i, arm in enumerate(arms.arms)}


def seed_styles(data: list[JobData], arms: ArmReport) -> dict[int, str]:
    """Each job's line style, by job number: the n-th seed of its arm gets the n-th style."""
    seeds: dict[int, list[int | None]] = {}
    for d in data:
        seeds.setdefault(id(arms.job_arm[d.row.job]), []).append(_seed(d))
    return {d.row.job: SEED_STYLES[sorted(set(seeds[id(arms.job_arm[d.row.job])]),
                                          key=lambda x: (x is not None, x or 0)).index(_seed(d))
                                   % len(SEED_STYLES)]
            for d in data}


def _seed(d: JobData) -> int | None:
    try:
        return seed_of(d.all_overrides)
    except ValueError:
        return None


def _arm_panel(ax: Any, data: list[JobData], arms: ArmReport) -> None:
    key = arms.cost
    title = COSTS[key] if key else "arm"
    pct = f"{arms.settings.confidence:.0%}"
    colors = arm_colors(arms)
    # Arms that differ in one key's value are marked by the value alone (the key goes in the
    # title): long labels of close points would overlap.
    keys = {a.label.partition("=")[0] for a in arms.arms if " " not in a.label and "=" in a.label}
    short_key = keys.pop() if len(keys) == 1 and all("=" in a.label for a in arms.arms) else None
    for i, arm in enumerate(arms.arms):
        mean, (lo, hi) = arm.mean(FINAL), arm.ci(FINAL)
        if mean is None:
            continue
        x = arms.arm_cost.get(arm.label, i) if key else i
        yerr = [[mean - lo], [hi - mean]] if lo is not None and hi is not None else None
        marker = "s" if arm is arms.baseline else "o"
        ax.errorbar([x], [mean], yerr=yerr, fmt=marker, color=colors[id(arm)], capsize=5,
                    markersize=7, label=f"{arm.label} (n={arm.n_seeds})"
                    + (" baseline" if arm is arms.baseline else ""))
        text = arm.label.partition("=")[2] if short_key else arm.label
        ax.annotate(text + (" (baseline)" if arm is arms.baseline else ""), (x, mean),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(title)
    if not key:
        ax.set_xticks([])
    ax.set_ylabel("final validation CE loss")
    ax.set_title(f"arms{' by ' + short_key if short_key else ''}: final validation loss, "
                 f"mean and {pct} CI over seeds", fontsize=10)
    ax.grid(alpha=0.3)


def write_plot(data: list[JobData], arms: ArmReport, path: Path, title: str,
               scaling: ScalingReport | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = figure(data, arms, title, scaling)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def figure(data: list[JobData], arms: ArmReport, title: str,
           scaling: ScalingReport | None = None) -> Any:
    """report.png's matplotlib Figure: train loss, validation loss, arms (in that order), and
    a ladder's loss against compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A ladder (declared rung keys) gets a fourth panel: loss against compute, with the fits.
    panels = 3 + (scaling is not None)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5.5))
    ax_train, ax_val, ax_arms = axes[:3]
    if scaling is not None:
        from olmo_exp.sweep.scaling_plot import panel

        panel(axes[3], scaling)
    started = [d for d in data if d.metrics]
    unit = "tokens" if all(d.curve_tokens_per_step for d in started) else "steps"
    # Jobs that spend different FLOPs per token are compared on FLOPs spent, not tokens.
    flops = {d.row.flops_per_token for d in started}
    by_flops = unit == "tokens" and len(flops) > 1 and None not in flops
    colors, styles = arm_colors(arms), seed_styles(data, arms)
    for d in data:  # a job's colour is its arm's, its line style its seed's
        label = f"#{d.row.job} {d.row.overrides or '(no overrides)'}"
        if d.row.status != "finished":
            label += f" [{d.row.status}]"
        look = {"color": colors[id(arms.job_arm[d.row.job])], "linestyle": styles[d.row.job],
                "label": label}
        scale = (d.curve_tokens_per_step or 1) * ((d.row.flops_per_token or 1) if by_flops else 1)
        x, y = curve(d.metrics, TRAIN_LOSS, scale)
        ax_train.plot(x, y, linewidth=1.2, **look)
        x, y = curve(d.metrics, VAL_LOSS, scale)
        ax_val.plot(x, y, marker="o", markersize=4, **look)
    xlabel = "training FLOPs spent" if by_flops else f"{unit} seen"
    for ax, name in ((ax_train, "train CE loss"), (ax_val, "validation CE loss")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    _arm_panel(ax_arms, data, arms)
    handles, labels = ax_train.get_legend_handles_labels()
    ncol = 2
    if len(labels) > 8:  # many jobs: one entry per arm (its colour) and per seed (its line style)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colors[id(arm)]) for arm in arms.arms]
        labels = [arm.label for arm in arms.arms]
        seeds = sorted({(s, styles[d.row.job]) for d in data if (s := _seed(d)) is not None})
        handles += [Line2D([], [], color="grey", linestyle=style) for _, style in seeds]
        labels += [f"train.seed={s}" for s, _ in seeds]
        ncol = 4
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(textwrap.fill(title, width=200), fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / ncol), 1, 1))
    return fig
