"""Loss-vs-compute fits of a ladder, with bootstrap intervals over seeds, and the compute
multiplier of one arm against the baseline arm. Pure numerics: no files, no Hydra, no torch.

The law, per arm: ``L(C) = E + A * (C / c_ref)**-alpha`` (C: training FLOPs; E: the loss no
compute removes; c_ref: a stated reference compute).
For a fixed ``alpha`` the law is linear in (E, A), so the fit is solved exactly for (E, A) and
searched over ``alpha`` alone (variable projection): a dense log grid, then a local refinement.
That is a global search over the only nonlinear parameter: no start point to choose, no local
minimum to land in, and the same code fits a thousand bootstrap resamples at once. E >= 0 and
A > 0 are imposed (a loss that rises with compute has no fit).

Bootstrap intervals: every rung's seeds resampled (:mod:`olmo_exp.sweep.seed_bootstrap`) and
everything refitted.

numpy and scipy are imported inside the functions: a rejected config must not pay for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from olmo_exp.sweep.seed_bootstrap import interval, resampled_means

if TYPE_CHECKING:
    import numpy as np

ALPHA_BOUNDS = (1e-3, 4.0)
ALPHA_GRID = 160
FINE_GRID = 17
MIN_COMPUTES = 3
"""A 3-parameter law needs at least 3 distinct computes."""
BETTER, WORSE, WITHIN_NOISE, NA = "better", "worse", "within noise", "n/a"

Seed = int | None


@dataclass
class Rung:
    """One model size of one arm: its training compute and final validation loss per seed."""

    name: str
    """The rung keys' values (``model.d_model=128 model.n_layers=4``): the same name at every
    arm is the same rung."""
    compute: float
    losses: dict[Seed, float]


@dataclass
class Law:
    """``L(C) = E + A * (C / c_ref)**-alpha`` with C in FLOPs. A is the reducible loss at a
    stated reference compute inside the ladder's range (A for C in raw FLOPs would move by
    ``c_ref**alpha`` with the least change of alpha: an ill-conditioned number to report)."""

    E: float
    A: float
    alpha: float
    c_ref: float = 1.0

    def loss(self, compute: Any) -> Any:
        import numpy as np

        return self.E + self.A * (np.asarray(compute, dtype=float) / self.c_ref) ** -self.alpha

    def compute_for(self, loss: Any) -> Any:
        """The compute at which the law reaches ``loss``; inf at or below E (never reached)."""
        import numpy as np

        gap = np.asarray(loss, dtype=float) - self.E
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, self.c_ref * (self.A / np.maximum(gap, 1e-300))
                            ** (1 / self.alpha), np.inf)


# -- the fit ------------------------------------------------------------------------------------


def _solve(X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted least squares of ``Y ~ E + A * X`` with E >= 0, one fit per pair of rows of
    X (..., R) and Y (..., R) (broadcast); returns (E, A, SSE), SSE inf where A <= 0."""
    import numpy as np

    sw = w.sum()
    xbar = (X * w).sum(-1) / sw
    ybar = (Y * w).sum(-1) / sw
    Xc = X - xbar[..., None]
    Yc = Y - ybar[..., None]
    sxx = (Xc**2 * w).sum(-1)
    sxy = (Xc * Yc * w).sum(-1)
    syy = (Yc**2 * w).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        A = sxy / sxx
        E = ybar - A * xbar
        sse = syy - sxy * A
        # E < 0 is not allowed: there the best fit with E >= 0 has E = 0 (the SSE is convex).
        sxy0 = (X * Y * w).sum(-1)
        A0 = sxy0 / (X**2 * w).sum(-1)
        sse0 = (Y**2 * w).sum(-1) - sxy0 * A0
    neg = E < 0
    E = np.where(neg, 0.0, E)
    A = np.where(neg, A0, A)
    sse = np.where(neg, sse0, sse)
    sse = np.where((A > 0) & np.isfinite(sse), np.maximum(sse, 0.0), np.inf)
    return E, A, sse


def _profile(t: np.ndarray, Y: np.ndarray, w: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """SSE (B, G) of the best (E, A) for each row of Y (B, R) and each alpha (G,): the same
    solve as :func:`_solve`, written as matrix products (B x G fits at once)."""
    import numpy as np

    X = np.exp(-np.outer(alphas, t))  # (G, R)
    sw = w.sum()
    xbar = X @ w / sw
    ybar = Y @ w / sw
    Xc = X - xbar[:, None]
    Yc = Y - ybar[:, None]
    sxx = (Xc**2) @ w
    sxy = (Yc * w) @ Xc.T  # (B, G)
    syy = (Yc**2) @ w
    sxx0 = (X**2) @ w
    sxy0 = (Y * w) @ X.T
    syy0 = (Y**2) @ w
    with np.errstate(divide="ignore", invalid="ignore"):
        A = sxy / sxx
        neg = ybar[:, None] - A * xbar < 0
        A0 = sxy0 / sxx0
        sse = np.where(neg, syy0[:, None] - sxy0 * A0, syy[:, None] - sxy * A)
        A = np.where(neg, A0, A)
    return np.where((A > 0) & np.isfinite(sse), np.maximum(sse, 0.0), np.inf)


def fit_laws(log_c: np.ndarray, Y: np.ndarray, w: np.ndarray, log_ref: float,
             polish: bool = False) -> np.ndarray:
    """Fits one law per row of Y (B, R) against ``log_c`` (R,) with weights ``w`` (R,):
    (B, 3) of (E, A, alpha), A for C / exp(log_ref); a row with no fit (loss not falling) is nan.
    ``polish``: refine alpha with scipy's bounded scalar minimizer (the point estimate)."""
    import numpy as np

    c0 = float(log_c.min())
    t = log_c - c0  # computes relative to the smallest: a well-scaled design
    lo, hi = np.log(ALPHA_BOUNDS[0]), np.log(ALPHA_BOUNDS[1])
    grid = np.linspace(lo, hi, ALPHA_GRID)
    sse = _profile(t, Y, w, np.exp(grid))
    best = np.argmin(sse, axis=1)
    rows = np.arange(Y.shape[0])
    ok = np.isfinite(sse[rows, best])
    # A fine grid between the best coarse point's neighbours, one per row, then a parabola
    # through the best fine point and its neighbours.
    step = grid[1] - grid[0]
    offsets = np.linspace(-step, step, FINE_GRID)
    fine = np.clip(grid[best][:, None] + offsets[None, :], lo, hi)  # (B, F)
    X = np.exp(-np.exp(fine)[:, :, None] * t[None, None, :])  # (B, F, R)
    fine_sse = _solve(X, Y[:, None, :], w)[2]
    f = np.clip(np.argmin(fine_sse, axis=1), 1, FINE_GRID - 2)
    s0, s1, s2 = fine_sse[rows, f - 1], fine_sse[rows, f], fine_sse[rows, f + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = s0 - 2 * s1 + s2
        shift = np.where((denom > 0) & np.isfinite(denom), 0.5 * (s0 - s2) / denom, 0.0)
    log_alpha = np.clip(fine[rows, f] + np.clip(shift, -1, 1) * (offsets[1] - offsets[0]),
                        lo, hi)
    if polish:
        from scipy.optimize import minimize_scalar

        for b in np.flatnonzero(ok):
            def cost(la: float, b: int = b) -> float:
                return float(_profile(t, Y[b:b + 1], w, np.exp([la]))[0, 0])

            bracket = (grid[max(best[b] - 2, 0)], grid[min(best[b] + 2, ALPHA_GRID - 1)])
            res = minimize_scalar(cost, bounds=bracket, method="bounded",
                                  options={"xatol": 1e-10})
            if res.fun <= cost(log_alpha[b]):
                log_alpha[b] = res.x
    alpha = np.exp(np.where(ok, log_alpha, 0.0))
    # (E, A) at each row's refined alpha, exactly: the same solve with one alpha per row.
    X = np.exp(-alpha[:, None] * t[None, :])  # (B, R)
    E, A, sse = _solve(X, Y, w)
    # A * exp(-alpha * (log C - c0)) = (A * exp(alpha * (c0 - log_ref))) * (C / ref)**-alpha
    out = np.stack([E, A * np.exp(alpha * (c0 - log_ref)), alpha], axis=1)
    out[~(ok & np.isfinite(sse))] = np.nan
    return out


# -- one arm ------------------------------------------------------------------------------------


@dataclass
class ArmFit:
    arm: str
    rungs: list[Rung]
    law: Law | None = None
    problem: str = ""
    """Why there is no fit (one line, no numbers); empty when fitted."""
    boot: np.ndarray | None = None
    """(n_boot, 3) bootstrap laws (E, A, alpha); None without intervals."""
    ci_problem: str = ""
    """Why there are no intervals (a rung with one seed)."""
    warning: str = ""
    """The fit sits on a bound (E = 0, alpha at the search limit): the numbers mean little."""
    cis: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def compute_range(self) -> tuple[float, float]:
        computes = [r.compute for r in self.rungs]
        return min(computes), max(computes)


def reference_compute(computes: Sequence[float]) -> float:
    """The power of ten nearest the computes' geometric mean: the ladder's A is stated there."""
    return 10.0 ** round(sum(math.log10(c) for c in computes) / len(computes))


def fit_arm(arm: str, rungs: Sequence[Rung], n_boot: int = 1000, confidence: float = 0.95,
            seed: int = 0, c_ref: float | None = None, widen: bool = True) -> ArmFit:
    """The law of one arm from its rungs (rungs without a finished seed must not be passed: the
    caller names them), with percentile bootstrap intervals of E, A and alpha. ``c_ref``: where
    A is stated (default: :func:`reference_compute` of the rungs)."""
    import numpy as np

    rungs = sorted(rungs, key=lambda r: r.compute)
    if not rungs:
        return ArmFit(arm=arm, rungs=[], problem=f"can't fit `{arm}`: no finished job")
    c_ref = c_ref or reference_compute([r.compute for r in rungs])
    fit = ArmFit(arm=arm, rungs=list(rungs))
    distinct = len({r.compute for r in rungs})
    if distinct < MIN_COMPUTES:
        fit.problem = (f"can't fit `{arm}`: {_count(distinct)} distinct compute"
                       f"{'' if distinct == 1 else 's'} (a fit needs at least three)")
        return fit
    log_c = np.log([r.compute for r in rungs])
    w = np.asarray([len(r.losses) for r in rungs], dtype=float)
    means = np.asarray([[np.mean(list(r.losses.values())) for r in rungs]])
    point = fit_laws(log_c, means, w, math.log(c_ref), polish=True)[0]
    if not np.isfinite(point).all():
        fit.problem = f"can't fit `{arm}`: its loss does not fall with compute"
        return fit
    fit.law = Law(*map(float, point), c_ref=c_ref)
    at_bound = [what for what, hit in (
        ("E = 0", fit.law.E <= 0),
        ("α at its search limit", not 1.01 * ALPHA_BOUNDS[0] < fit.law.alpha < ALPHA_BOUNDS[1] / 1.01),
    ) if hit]
    if at_bound:
        fit.warning = (f"`{arm}`: the fit is at a bound ({', '.join(at_bound)}): its losses do not "
                       "flatten toward a floor over this range, so E, A, α and k mean little")
    single = [r.name for r in rungs if len(r.losses) < 2]
    if single:
        fit.ci_problem = ("no intervals: rung" + ("s " if len(single) > 1 else " ")
                          + ", ".join(f"`{s}`" for s in single) + " ha"
                          + ("ve" if len(single) > 1 else "s") + " a single seed")
        return fit
    fit.boot = fit_laws(log_c, resampled_means(rungs, n_boot, seed, widen), w, math.log(c_ref))
    for i, name in enumerate(("E", "A", "alpha")):
        column = fit.boot[:, i]
        # A resample with no fit (its loss does not fall) counts as the widest outcome.
        column = np.where(np.isfinite(column), column, np.inf)
        fit.cis[name] = interval(column, confidence)
    return fit


def _count(n: int) -> str:
    return ("no", "one", "two")[n] if n < 3 else str(n)


# -- the compute multiplier -----------------------------------------------------------------------


@dataclass
class Multiplier:
    """k(C) = C_baseline(L_arm(C)) / C: how much more (k > 1) or less (k < 1) compute the
    baseline arm needs to reach the loss this arm reaches with C."""

    arm: str
    at: str
    """The rung's name."""
    compute: float
    largest: bool = False
    """At the arm's largest compute (the headline number)."""
    k: float | None = None
    ci: tuple[float, float] | None = None
    verdict: str = NA
    note: str = ""
    """Undefined (the arm's loss is at or below the baseline's E) or extrapolated (where)."""


def _k(arm_law: np.ndarray, base_law: np.ndarray, compute: float, c_ref: float) -> np.ndarray:
    """k for laws given as (..., 3) arrays (both stated at ``c_ref``); inf where the arm's loss
    is at or below the baseline's E (the baseline never reaches it)."""
    import numpy as np

    loss = arm_law[..., 0] + arm_law[..., 1] * (compute / c_ref) ** -arm_law[..., 2]
    gap = loss - base_law[..., 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_c = (np.log(base_law[..., 1]) - np.log(np.maximum(gap, 1e-300))) / base_law[..., 2]
        k = np.exp(log_c + math.log(c_ref) - math.log(compute))
    return np.where(gap > 0, k, np.inf)


def multipliers(arm: ArmFit, base: ArmFit, confidence: float = 0.95) -> tuple[list[Multiplier], str]:
    """k at each of the arm's rungs (the last: its largest compute), with intervals and
    verdicts; or ([], one line saying why there is none)."""
    import numpy as np

    if arm.law is None or base.law is None:
        which = "its" if arm.law is None else "the baseline's"
        return [], f"no compute multiplier for `{arm.arm}`: {which} fit could not be made"
    (a_lo, a_hi), (b_lo, b_hi) = arm.compute_range, base.compute_range
    if a_hi < b_lo or b_hi < a_lo:
        return [], (f"no compute multiplier for `{arm.arm}`: its compute range does not overlap "
                    "the baseline's")
    arm_point = np.asarray([arm.law.E, arm.law.A, arm.law.alpha])
    base_point = np.asarray([base.law.E, base.law.A, base.law.alpha])
    if arm.law.c_ref != base.law.c_ref:
        raise ValueError("the arms' laws are stated at different reference computes")
    c_ref = arm.law.c_ref
    out = []
    for rung in arm.rungs:
        compute = rung.compute
        m = Multiplier(arm=arm.arm, at=rung.name, compute=compute, largest=compute == a_hi)
        k = float(_k(arm_point, base_point, compute, c_ref))
        if not math.isfinite(k):
            m.note = ("undefined: the arm's fitted loss at this compute is at or below the "
                      "baseline's fitted E")
            out.append(m)
            continue
        m.k = k
        notes = []
        if not a_lo <= compute <= a_hi:
            notes.append("arm extrapolated")
        if not b_lo <= k * compute <= b_hi:
            notes.append("baseline extrapolated")
        m.note = "; ".join(notes)
        if arm.boot is not None and base.boot is not None:
            samples = _k(arm.boot, base.boot, compute, c_ref)
            samples = np.where(np.isnan(samples), np.inf, samples)
            m.ci = interval(samples, confidence)
            m.verdict = (BETTER if m.ci[0] > 1 else WORSE if m.ci[1] < 1 else WITHIN_NOISE)
        out.append(m)
    return out, ""


@dataclass
class LadderFit:
    fits: dict[str, ArmFit]
    baseline: str
    multipliers: dict[str, list[Multiplier]]
    notes: dict[str, str]
    """Per non-baseline arm, why it has no multipliers (one line)."""


def fit_ladder(arms: Mapping[str, Sequence[Rung]], baseline: str, n_boot: int = 1000,
               confidence: float = 0.95, seed: int = 0, widen: bool = True) -> LadderFit:
    computes = [r.compute for rungs in arms.values() for r in rungs]
    c_ref = reference_compute(computes) if computes else 1.0
    fits = {name: fit_arm(name, rungs, n_boot, confidence, seed, c_ref, widen)
            for name, rungs in arms.items()}
    result = LadderFit(fits=fits, baseline=baseline, multipliers={}, notes={})
    for name, fit in fits.items():
        if name == baseline:
            continue
        result.multipliers[name], note = multipliers(fit, fits[baseline], confidence)
        if note:
            result.notes[name] = note
    return result
