"""How often the ladder fit's bootstrap intervals hold the truth, on synthetic ladders drawn from
a known law with Gaussian seed noise: the numbers in docs/scaling.md come from here.

``python -m olmo_exp.sweep.fit_coverage --seeds 2 --replicates 60`` prints one markdown table row:
of the replicates, how many 95 % intervals of E, A, alpha and of the compute multiplier k (of an
arm built to be worth ``--k`` times the compute; at the middle rung and at the largest) hold the
true value. ``--plain``: the plain bootstrap (no sqrt(n/(n-1)) widening), for comparison.
``--shared-e [--e-shift D]``: the report's per-arm laws against one E shared by both arms, on
the multiplier at the largest compute (coverage, and the interval's high/low ratio).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from olmo_exp.sweep.scaling_fit import Law, Rung, fit_ladder

if TYPE_CHECKING:
    import numpy as np

TRUE = Law(E=2.0, A=0.3, alpha=0.25, c_ref=1e15)
"""Loss 2.6 at 1e13 FLOPs, 2.17 at 1e17: a Chinchilla-like law."""


def synthetic_ladder(law: Law, rng: np.random.Generator, noise: float, seeds: int,
                     computes: Sequence[float]) -> list[Rung]:
    """One arm's rungs: the law's loss at each compute plus Gaussian seed noise."""
    return [Rung(f"rung{i}", float(c), {s: float(law.loss(c)) + float(rng.normal(0, noise))
                                        for s in range(seeds)})
            for i, c in enumerate(computes)]


def worth(k: float, base: Law) -> Law:
    """The law of an arm that reaches with C the loss ``base`` reaches with k*C."""
    return Law(base.E, base.A * k ** -base.alpha, base.alpha, base.c_ref)


def coverage(seeds: int, replicates: int, rungs: int = 5, noise: float = 0.01, k: float = 1.5,
             resamples: int = 1000, widen: bool = True) -> dict[str, int]:
    import numpy as np

    computes = np.logspace(13, 17, rungs)
    covered = {"E": 0, "A": 0, "alpha": 0, "k middle": 0, "k largest": 0}
    for replicate in range(replicates):
        rng = np.random.default_rng(100 + replicate)
        result = fit_ladder({"base": synthetic_ladder(TRUE, rng, noise, seeds, computes),
                             "arm": synthetic_ladder(worth(k, TRUE), rng, noise, seeds, computes)},
                            "base", n_boot=resamples, seed=replicate, widen=widen)
        fit = result.fits["base"]
        for name in ("E", "A", "alpha"):
            lo, hi = fit.cis[name]
            covered[name] += lo <= getattr(TRUE, name) <= hi
        ks = result.multipliers["arm"]
        for name, m in (("k middle", ks[len(ks) // 2]), ("k largest", ks[-1])):
            covered[name] += m.ci is not None and m.ci[0] <= k <= m.ci[1]
    return covered


def shared_e_laws(log_c: np.ndarray, Ys: list[np.ndarray], w: np.ndarray, log_ref: float
                  ) -> list[np.ndarray]:
    """The alternative the report does not use: one E shared by all arms (each with its own A and
    alpha), fitted jointly to each row of every arm's Y (B, R) by a grid over E and alpha; per
    arm (B, 3) laws (E, A, alpha) stated at exp(log_ref), as :func:`fit_laws` gives them."""
    import numpy as np

    alphas = np.exp(np.linspace(np.log(1e-3), np.log(4.0), 240))
    t = log_c - log_c.min()
    X = np.exp(-np.outer(alphas, t))  # (G, R)
    sxx = (X**2) @ w
    rows = np.arange(Ys[0].shape[0])
    floor = min(float(Y.min()) for Y in Ys)
    Es = np.linspace(0.0, floor - 1e-4, 240)
    total = np.zeros((rows.size, Es.size))
    best = [np.zeros((rows.size, Es.size), dtype=int) for _ in Ys]
    for j, E in enumerate(Es):
        for i, Y in enumerate(Ys):  # for a fixed E and alpha, A is a regression through 0
            sxz = ((Y - E) * w) @ X.T  # (B, G)
            with np.errstate(divide="ignore", invalid="ignore"):
                sse = ((Y - E) ** 2) @ w
                sse = np.where(sxz > 0, sse[:, None] - sxz**2 / sxx, np.inf)
            best[i][:, j] = sse.argmin(axis=1)
            total[:, j] += sse[rows, best[i][:, j]]
    j = total.argmin(axis=1)
    laws = []
    for i, Y in enumerate(Ys):
        alpha = alphas[best[i][rows, j]]
        x = np.exp(-alpha[:, None] * t[None, :])
        A = (((Y - Es[j][:, None]) * x) @ w) / ((x**2) @ w)
        laws.append(np.stack([Es[j], A * np.exp(alpha * (log_c.min() - log_ref)), alpha], 1))
    return laws


def shared_e_comparison(seeds: int, replicates: int, rungs: int = 5, noise: float = 0.01,
                        k: float = 1.5, resamples: int = 1000, e_shift: float = 0.0
                        ) -> dict[str, tuple[int, float]]:
    """k at the largest compute, per-arm laws (the report's) against a shared E: (replicates
    whose interval holds the true k, median of the interval's high/low). ``e_shift``: the arm's
    true E minus the baseline's (A lowered by as much, so the arm starts alike)."""
    import math

    import numpy as np

    from olmo_exp.sweep.scaling_fit import _k
    from olmo_exp.sweep.seed_bootstrap import interval, resampled_means

    computes = np.logspace(13, 17, rungs)
    arm_law = worth(k, TRUE)
    arm_law = Law(arm_law.E + e_shift, arm_law.A - e_shift, arm_law.alpha, arm_law.c_ref)
    true_k = float(TRUE.compute_for(float(arm_law.loss(computes[-1])))) / computes[-1]
    found: dict[str, list[Any]] = {"per-arm E": [0, []], "shared E": [0, []]}
    for replicate in range(replicates):
        rng = np.random.default_rng(100 + replicate)
        base = synthetic_ladder(TRUE, rng, noise, seeds, computes)
        arm = synthetic_ladder(arm_law, rng, noise, seeds, computes)
        result = fit_ladder({"base": base, "arm": arm}, "base", n_boot=resamples, seed=replicate)
        c_ref = result.fits["base"].law.c_ref
        ci = result.multipliers["arm"][-1].ci
        laws = shared_e_laws(np.log(computes), [resampled_means(r, resamples, replicate)
                                                for r in (base, arm)],
                             np.full(rungs, float(seeds)), math.log(c_ref))
        samples = _k(laws[1], laws[0], computes[-1], c_ref)
        for name, (lo, hi) in (("per-arm E", ci), ("shared E", interval(
                np.where(np.isnan(samples), np.inf, samples), 0.95))):
            found[name][0] += lo <= true_k <= hi
            found[name][1].append(hi / lo)
    return {name: (n, float(np.median(ratios))) for name, (n, ratios) in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m olmo_exp.sweep.fit_coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per rung")
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--rungs", type=int, default=5, help="rungs over 1e13..1e17 FLOPs")
    parser.add_argument("--noise", type=float, default=0.01, help="seed noise (loss std)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--plain", action="store_true", help="no sqrt(n/(n-1)) widening")
    parser.add_argument("--shared-e", action="store_true",
                        help="k at the largest compute: per-arm E against one shared E")
    parser.add_argument("--e-shift", type=float, default=0.0,
                        help="with --shared-e: the arm's true E minus the baseline's")
    args = parser.parse_args(argv)
    if args.shared_e:
        for name, (n, ratio) in shared_e_comparison(
                args.seeds, args.replicates, args.rungs, args.noise, resamples=args.resamples,
                e_shift=args.e_shift).items():
            print(f"| {args.seeds} | {args.rungs} | {args.e_shift:g} | {name} | {n} of "
                  f"{args.replicates} | {ratio:.2f} |")
        return 0
    covered = coverage(args.seeds, args.replicates, args.rungs, args.noise,
                       resamples=args.resamples, widen=not args.plain)
    print(f"| {args.seeds} | {'plain' if args.plain else 'widened'} | "
          + " | ".join(str(n) for n in covered.values()) + f" | of {args.replicates} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
