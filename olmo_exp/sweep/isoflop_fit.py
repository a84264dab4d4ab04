"""isoFLOP fits (Chinchilla's approach 2): at each fixed compute budget, the final validation
loss of models of different sizes N is fitted by a parabola in log N; its vertex is the budget's
compute-optimal size N*(C) and loss L*(C); the optima are then fitted by a power law
``N* = a * C**b`` over the budgets. Bootstrap intervals resample every point's seeds, as
:mod:`olmo_exp.sweep.scaling_fit` does. Pure numerics; numpy imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from olmo_exp.sweep.scaling_fit import Rung
from olmo_exp.sweep.seed_bootstrap import interval, resampled_means

if TYPE_CHECKING:
    import numpy as np

MIN_SIZES = 3
MAX_FAILED = 0.05
"""Above this share of resamples without a vertex, an interval would hide it: none is given."""


@dataclass
class IsoPoint:
    """One model size at one budget: N (parameters) and the final loss per seed."""

    budget: float
    rung: Rung
    """``rung.compute`` holds N here (the x of the parabola), ``rung.name`` the size's name."""


@dataclass
class BudgetFit:
    budget: float
    points: list[IsoPoint]
    n_opt: float | None = None
    loss_opt: float | None = None
    n_ci: tuple[float, float] | None = None
    loss_ci: tuple[float, float] | None = None
    curvature: float | None = None
    """The parabola's coefficient of (log N)^2 (> 0: a minimum)."""
    problem: str = ""
    note: str = ""
    """``extrapolated``: the vertex lies outside the sizes run at this budget."""


@dataclass
class IsoflopFit:
    arm: str
    budgets: list[BudgetFit]
    a: float | None = None
    b: float | None = None
    a_ci: tuple[float, float] | None = None
    b_ci: tuple[float, float] | None = None
    problem: str = ""
    ci_problem: str = ""
    boot_n_opt: np.ndarray | None = field(default=None, repr=False)


def _parabolas(log_n: np.ndarray, Y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted least-squares ``y = c0 + c1 u + c2 u^2`` (u = log N - mean) for each row of
    Y (B, P); returns (log N*, L*, c2), nan where c2 <= 0 (no minimum)."""
    import numpy as np

    centre = float(np.average(log_n, weights=w))
    u = log_n - centre
    D = np.stack([np.ones_like(u), u, u**2], axis=1)  # (P, 3)
    # Normal equations once; every resample is one matrix product.
    solve = np.linalg.solve(D.T @ (D * w[:, None]), (D * w[:, None]).T)  # (3, P)
    c0, c1, c2 = (Y @ solve.T).T
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(c2 > 0, -c1 / (2 * c2), np.nan)
        loss = np.where(c2 > 0, c0 - c1**2 / (4 * c2), np.nan)
    return vertex + centre, loss, c2


def _power_law(log_c: np.ndarray, log_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``log N* = log a + b log C`` per row of log_n (B, K): (a, b), each (B,)."""
    import numpy as np

    xc = log_c - log_c.mean()
    b = (log_n - log_n.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    log_a = log_n.mean(axis=1) - b * log_c.mean()
    return np.exp(log_a), b


def fit_isoflop(arm: str, points: Sequence[IsoPoint], n_boot: int = 1000,
                confidence: float = 0.95, seed: int = 0) -> IsoflopFit:
    import numpy as np

    by_budget: dict[float, list[IsoPoint]] = {}
    for p in points:
        by_budget.setdefault(p.budget, []).append(p)
    result = IsoflopFit(arm=arm, budgets=[])
    single = sorted({p.rung.name for p in points if len(p.rung.losses) < 2})
    boot_ok = not single
    if single:
        result.ci_problem = "no intervals: a size with a single seed"
    boot_opt: dict[float, np.ndarray] = {}
    for budget in sorted(by_budget):
        pts = sorted(by_budget[budget], key=lambda p: p.rung.compute)
        fit = BudgetFit(budget=budget, points=pts)
        result.budgets.append(fit)
        sizes = len({p.rung.compute for p in pts})
        if sizes < MIN_SIZES:
            fit.problem = "can't fit a parabola: fewer than three sizes at this budget"
            continue
        log_n = np.log([p.rung.compute for p in pts])
        w = np.asarray([len(p.rung.losses) for p in pts], dtype=float)
        means = np.asarray([[np.mean(list(p.rung.losses.values())) for p in pts]])
        vertex, loss, c2 = (v[0] for v in _parabolas(log_n, means, w))
        fit.curvature = float(c2)
        if not math.isfinite(vertex):
            fit.problem = "no minimum: the loss is not convex in log N at this budget"
            continue
        fit.n_opt, fit.loss_opt = float(np.exp(vertex)), float(loss)
        if not log_n.min() <= vertex <= log_n.max():
            fit.note = "extrapolated"
        if boot_ok:
            # Each size resampled under its own name at this budget (the same draws for
            # every arm: paired by seed).
            rungs = [Rung(f"{budget:g}|{p.rung.name}", p.rung.compute, p.rung.losses)
                     for p in pts]
            b_vertex, b_loss, _ = _parabolas(log_n, resampled_means(rungs, n_boot, seed), w)
            boot_opt[budget] = b_vertex
            if np.mean(~np.isfinite(b_vertex)) <= MAX_FAILED:
                finite = np.isfinite(b_vertex)
                lo, hi = interval(b_vertex[finite], confidence)
                fit.n_ci = (math.exp(lo), math.exp(hi))
                fit.loss_ci = interval(b_loss[finite], confidence)
    fitted = [f for f in result.budgets if f.n_opt is not None]
    if len(fitted) < 2:
        result.problem = (f"no power law for `{arm}`: fewer than two budgets with an optimum")
        return result
    log_c = np.log([f.budget for f in fitted])
    a, b = _power_law(log_c, np.log([[f.n_opt for f in fitted]]))
    result.a, result.b = float(a[0]), float(b[0])
    if boot_ok and all(f.budget in boot_opt for f in fitted):
        opt = np.stack([boot_opt[f.budget] for f in fitted], axis=1)  # (B, K)
        good = np.isfinite(opt).all(axis=1)
        result.boot_n_opt = opt
        if np.mean(~good) <= MAX_FAILED:
            ba, bb = _power_law(log_c, opt[good])
            result.a_ci, result.b_ci = interval(ba, confidence), interval(bb, confidence)
        else:
            result.ci_problem = "no intervals: too many resamples have no minimum at a budget"
    return result
