"""The seed bootstrap of a ladder's fits: every rung's seeds resampled with replacement.

Their spread around the rung's mean is widened by sqrt(n/(n-1)) first, so that a resampled mean
has the variance the seeds' sample variance estimates, s^2/n (the plain bootstrap gives
(n-1)/n of it: half with 2 seeds, and intervals that cover too rarely; docs/scaling.md has the
measured coverage). Arms draw the same resample at a rung (same seeds, sorted), so the
seed-paired noise cancels in a multiplier as it does in a paired difference.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from olmo_exp.sweep.scaling_fit import Rung, Seed


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval (no interpolation, so that infinite samples stay infinite)."""
    import numpy as np

    tail = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def _uniforms(rung: str, n_boot: int, width: int, seed: int) -> np.ndarray:
    """The resampling draws of one rung, the same for every arm (deterministic per rung name)."""
    import numpy as np

    rng = np.random.default_rng([seed, zlib.crc32(rung.encode())])
    return rng.random((n_boot, width))


def resampled_means(rungs: Sequence[Rung], n_boot: int, seed: int = 0, widen: bool = True
                    ) -> np.ndarray:
    """(n_boot, R): each rung's mean loss over its seeds resampled with replacement, the seeds'
    spread widened by sqrt(n/(n-1)) (see the module doc; ``widen=False``: the plain bootstrap,
    for the comparison in docs/scaling.md)."""
    import numpy as np

    out = np.empty((n_boot, len(rungs)))
    for r, rung in enumerate(rungs):
        values = np.asarray([rung.losses[s] for s in _sorted_seeds(rung.losses)], dtype=float)
        n = values.size
        mean = values.mean()
        if n > 1 and widen:
            values = mean + (values - mean) * math.sqrt(n / (n - 1))
        draws = _uniforms(rung.name, n_boot, max(64, n), seed)[:, :n]
        idx = np.minimum((draws * n).astype(int), n - 1)
        out[:, r] = values[idx].mean(axis=1)
    return out


def _sorted_seeds(losses: Mapping[Seed, float]) -> list[Seed]:
    return sorted(losses, key=lambda s: (s is not None, s or 0))
