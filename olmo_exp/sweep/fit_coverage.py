"""How often the ladder fit's bootstrap intervals hold the truth, on synthetic ladders drawn from
a known law with Gaussian seed noise: the numbers in docs/scaling.md come from here.

``python -m olmo_exp.sweep.fit_coverage --seeds 2 --replicates 60`` prints one markdown table row:
of the replicates, how many 95 % intervals of E, A, alpha and of the compute multiplier k (of an
arm built to be worth ``--k`` times the compute; at the middle rung and at the largest) hold the
true value. ``--plain``: the plain bootstrap (no sqrt(n/(n-1)) widening), for comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m olmo_exp.sweep.fit_coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per rung")
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--rungs", type=int, default=5, help="rungs over 1e13..1e17 FLOPs")
    parser.add_argument("--noise", type=float, default=0.01, help="seed noise (loss std)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--plain", action="store_true", help="no sqrt(n/(n-1)) widening")
    args = parser.parse_args(argv)
    covered = coverage(args.seeds, args.replicates, args.rungs, args.noise,
                       resamples=args.resamples, widen=not args.plain)
    print(f"| {args.seeds} | {'plain' if args.plain else 'widened'} | "
          + " | ".join(str(n) for n in covered.values()) + f" | of {args.replicates} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
