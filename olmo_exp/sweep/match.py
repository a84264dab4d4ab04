"""Equal-budget pairs: a uniform model and an OpenELM-LWS model matched on a budget, by computation.

The ``lws_vs_uniform`` sweep compares ``model=match_uniform`` with two LWS models that differ from
it only in the layer-wise schedule: ``match_lws_params`` has the same non-embedding parameter
count, ``match_lws_flops`` the same training FLOPs per token (at the run's sequence length). The
one free knob is the last layer's FFN scalar (``model.lws.fnn_scalars[1]``; OpenELM uses
4.0): :func:`search` scans it and picks the closest match, and the model files carry that value.

    python -m olmo_exp.sweep.match            # print each pair's match (and the best knob value)

A pair further apart than ``TOLERANCE`` is refused: by the tests, and by the sweep itself before
any job starts (:func:`check`, called from the report callback's ``on_multirun_start``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from olmo_exp.base.errors import ConfigError
from olmo_exp.config.compose import compose_run
from olmo_exp.data.check import check_run

TOLERANCE = 0.02


@dataclass(frozen=True)
class Pair:
    metric: str
    """A model_summary.json key: n_non_embedding_params or flops_per_token."""
    uniform: str
    """model option of the uniform model"""
    lws: str
    """model option of the LWS model matched to it"""


PAIRS = (
    Pair("n_non_embedding_params", "match_uniform", "match_lws_params"),
    Pair("flops_per_token", "match_uniform", "match_lws_flops"),
)


@dataclass
class Match:
    pair: Pair
    uniform_value: int
    lws_value: int

    @property
    def relative_diff(self) -> float:
        return self.lws_value / self.uniform_value - 1.0

    def __str__(self) -> str:
        return (f"{self.pair.metric}: {self.pair.uniform} {self.uniform_value:,} vs "
                f"{self.pair.lws} {self.lws_value:,} ({self.relative_diff:+.2%}, "
                f"tolerance {TOLERANCE:.0%})")


def summary(overrides: list[str], fnn_top: float | None = None) -> dict:
    """model_summary.json of the run these overrides describe (meta device: no weights, no data);
    ``fnn_top`` replaces the last layer's FFN scalar (the search's knob)."""
    return summarize_config(compose_run(overrides), fnn_top)


def summarize_config(config: Any, fnn_top: float | None = None) -> dict:
    from olmo_exp.build.summary import summarize

    if fnn_top is not None:
        config.model.lws.fnn_scalars = [config.model.lws.fnn_scalars[0], float(fnn_top)]
    vocab = config.model.padded_vocab_size(check_run(config).vocab_size)
    olmo_log = logging.getLogger("olmo_core")
    level = olmo_log.level
    olmo_log.setLevel(logging.WARNING)  # building on the meta device logs the whole module tree
    try:
        return summarize(config.model, config.model.build_config(vocab),
                         sequence_length=config.data.sequence_length)
    finally:
        olmo_log.setLevel(level)


def measure(pair: Pair, overrides: list[str] = ()) -> Match:
    """The pair under the run's other overrides (e.g. data.sequence_length changes FLOPs)."""
    common = [o for o in overrides if not o.startswith("model")]
    return Match(pair, summary([f"model={pair.uniform}", *common])[pair.metric],
                 summary([f"model={pair.lws}", *common])[pair.metric])


def check(overrides: list[str] = ()) -> list[Match]:
    """Every pair, printed; raises ConfigError naming the LWS model if one is out of tolerance."""
    matches = [measure(pair, list(overrides)) for pair in PAIRS]
    for m in matches:
        print(f"match: {m}", file=sys.stderr)
        if abs(m.relative_diff) > TOLERANCE:
            raise ConfigError(
                f"model={m.pair.lws}", m.lws_value,
                f"{m.pair.metric} must be within {TOLERANCE:.0%} of model={m.pair.uniform}'s "
                f"{m.uniform_value:,} (it is {m.relative_diff:+.2%}); rerun python -m "
                "olmo_exp.sweep.match and set the fnn_scalars it prints",
            )
    return matches


METRICS = ("n_non_embedding_params", "flops_per_token", "n_params", "kv_cache_bytes_per_token_bf16")
"""model_summary.json keys a sweep can declare matched (hydra.callbacks.sweep_report.matched)."""


def check_arms(arms: dict[str, list[str]], baseline: str, metrics: list[str],
               tolerance: float = TOLERANCE) -> None:
    """A sweep declared budget-matched: every arm (label -> one job's full overrides, so every
    override that changes a model counts) within ``tolerance`` of the baseline arm on each metric.
    Prints each comparison; raises ConfigError with the numbers for the first arm that drifts."""
    for metric in metrics:
        if metric not in METRICS:
            raise ConfigError("hydra.callbacks.sweep_report.matched", metric,
                              f"must be a list of {', '.join(METRICS)}")
    summaries = {label: summary(overrides) for label, overrides in arms.items()}
    drifted = []
    for metric in metrics:
        base = summaries[baseline][metric]
        for label, s in summaries.items():
            if label == baseline:
                continue
            diff = s[metric] / base - 1.0
            print(f"match: {metric}: {baseline} {base:,} vs {label} {s[metric]:,} ({diff:+.2%}, "
                  f"tolerance {tolerance:.0%})", file=sys.stderr)
            if abs(diff) > tolerance:
                drifted.append(f"arm {label} has {metric} {s[metric]:,} vs {base:,} ({diff:+.2%})")
    if drifted:
        raise ConfigError(
            "hydra.callbacks.sweep_report.matched", metrics,
            f"the sweep is declared budget-matched but {'; '.join(drifted)} against the baseline "
            f"arm {baseline}, beyond the tolerance of {tolerance:.0%}")


def search(pair: Pair, overrides: list[str] = (), low: float = 1.0, high: float = 8.0,
           step: float = 0.05) -> tuple[float, Match]:
    """The last-layer FFN scalar of the LWS model that best matches the pair's metric."""
    common = [o for o in overrides if not o.startswith("model")]
    target = summary([f"model={pair.uniform}", *common])[pair.metric]
    config = compose_run([f"model={pair.lws}", *common])
    best: tuple[float, Match] | None = None
    for top in np.round(np.arange(low, high + step / 2, step), 2):
        match = Match(pair, target, summarize_config(config, top)[pair.metric])
        if best is None or abs(match.relative_diff) < abs(best[1].relative_diff):
            best = (float(top), match)
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    overrides = sys.argv[1:] if argv is None else argv
    if overrides[:1] in (["-h"], ["--help"]):
        print("usage: python -m olmo_exp.sweep.match [overrides]  (each equal-budget pair's match "
              "and the best model.lws.fnn_scalars[1])")
        return 0
    try:
        for pair in PAIRS:
            top, best = search(pair, overrides)
            print(f"{pair.lws}: best model.lws.fnn_scalars[1] = {top} -> {best}")
        check(overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
