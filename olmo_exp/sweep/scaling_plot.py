"""report.png's scaling panel: final validation loss against training compute (log x), per arm
the rungs' seed means with their spread, the fitted law and its bootstrap band; in isoFLOP mode,
loss against N per budget with each parabola and its vertex."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from olmo_exp.sweep.scaling_report import ScalingReport

PANEL_GID = "scaling"
"""The panel's Axes gid (tests find the panel by it)."""


def _mean_std(losses: dict[Any, float]) -> tuple[float, float | None]:
    import numpy as np

    values = np.asarray(list(losses.values()), dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def _points(ax: Any, xs: list[float], losses: list[dict[Any, float]], color: str,
            label: str, marker: str = "o") -> None:
    stats = [_mean_std(v) for v in losses]
    yerr = [s or 0.0 for _, s in stats]
    ax.errorbar(xs, [m for m, _ in stats], yerr=yerr, fmt=marker, color=color, capsize=4,
                markersize=6, label=label)


def panel(ax: Any, report: ScalingReport) -> None:
    ax.set_gid(PANEL_GID)
    if report.settings.budget:
        _isoflop_panel(ax, report)
    else:
        _ladder_panel(ax, report)
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")


def _ladder_panel(ax: Any, report: ScalingReport) -> None:
    import numpy as np

    pct = f"{report.settings.confidence:.0%}"
    computes = [x for cells in report.cells.values() for c in cells for x in c.computes
                if math.isfinite(x) and x > 0]
    if not computes:
        ax.set_title("loss vs training compute: no finished job yet", fontsize=10)
        return
    span = np.logspace(math.log10(min(computes)), math.log10(max(computes)), 120)
    for i, arm in enumerate(report.arms):
        color = f"C{i % 10}"
        cells = [c for c in report.cells[arm] if c.losses and c.computes]
        label = arm + (" (baseline)" if arm == report.baseline else "")
        if cells:
            _points(ax, [sum(c.computes) / len(c.computes) for c in cells],
                    [c.losses for c in cells], color, label,
                    "s" if arm == report.baseline else "o")
        fit = report.fits.get(arm)
        if fit is None or fit.law is None:
            continue
        lo, hi = fit.compute_range
        inside = (span >= lo) & (span <= hi)
        ax.plot(span[inside], fit.law.loss(span[inside]), color=color, linewidth=1.5,
                label=f"fit: E={fit.law.E:.3f}, α={fit.law.alpha:.3f}")
        ax.plot(span, fit.law.loss(span), color=color, linewidth=1, linestyle=":")
        if fit.boot is not None:
            boot = fit.boot[np.isfinite(fit.boot).all(axis=1)]
            curves = boot[:, :1] + boot[:, 1:2] * (span[None, :] / fit.law.c_ref) ** -boot[:, 2:3]
            tail = (1 - report.settings.confidence) / 2
            band = np.quantile(curves, [tail, 1 - tail], axis=0)
            ax.fill_between(span, band[0], band[1], color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel("final validation CE loss")
    ax.set_title(f"loss vs compute: seed mean ± std, fit (dotted: extrapolated), {pct} band",
                 fontsize=10)


def _isoflop_panel(ax: Any, report: ScalingReport) -> None:
    import numpy as np

    styles = ["-", "--", "-.", ":"]
    for i, (arm, fit) in enumerate(report.isoflop.items()):
        color = f"C{i % 10}"
        for j, b in enumerate(fit.budgets):
            if not b.points:
                continue
            xs = [p.rung.compute for p in b.points]
            _points(ax, xs, [p.rung.losses for p in b.points], color,
                    f"{arm} @ {b.budget:.2g} FLOPs")
            if b.n_opt is None:
                continue
            # The parabola through the vertex: L* + c2 (log N - log N*)^2.
            grid = np.logspace(math.log10(min(xs)), math.log10(max(xs)), 80)
            curve = b.loss_opt + b.curvature * (np.log(grid) - math.log(b.n_opt)) ** 2
            ax.plot(grid, curve, color=color, linestyle=styles[j % len(styles)], linewidth=1)
            ax.plot([b.n_opt], [b.loss_opt], marker="*", markersize=12, color=color)
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final validation CE loss")
    ax.set_title("isoFLOP: loss vs N per budget, parabolas in log N, vertices (*)", fontsize=10)
