"""Arms over the seed axis: statistics checked against numpy/scipy computed here, independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from olmo_exp.sweep.arms import (
    arm_key,
    arm_table_markdown,
    baseline_arm,
    compare,
    group_arms,
    last_k_mean,
    mean_ci,
    paired_diff,
    seed_of,
)


def t_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    x = np.asarray(values)
    mean, std = x.mean(), x.std(ddof=1)
    lo, hi = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
    return mean, std, lo, hi


def job(overrides: list[str], val: float | None, status: str = "completed", **extra) -> dict:
    return {"overrides": overrides, "metrics": {"val_loss": val, **extra}, "status": status}


# -- overrides ----------------------------------------------------------------------------------


def test_arm_key_strips_only_the_seed() -> None:
    overrides = ["model=lws", "+train.seed=3", "train.seeds=9", "data.train.seed=1",
                 "train.seed_offset=2", "train.lr=1e-3"]
    assert arm_key(overrides) == ("model=lws", "train.seeds=9", "data.train.seed=1",
                                  "train.seed_offset=2", "train.lr=1e-3")
    assert arm_key(["++train.seed=1", "x=1"]) == ("x=1",)
    assert arm_key(["a=1", "b=2"]) == ("a=1", "b=2")
    assert arm_key(["data.seed=4", "a=1"], seed_key="data.seed") == ("a=1",)


def test_seed_of() -> None:
    assert seed_of(["model=lws", "train.seed=7"]) == 7
    assert seed_of(["++train.seed=11"]) == 11
    assert seed_of(["model=lws", "data.train.seed=3"]) is None
    with pytest.raises(ValueError, match="integer"):
        seed_of(["train.seed=abc"])


def test_last_k_mean() -> None:
    assert last_k_mean([4.0, 3.0, 2.0, 1.0], 2) == pytest.approx(1.5)
    assert last_k_mean([4.0, 3.0, 2.0, 1.0], 4) == pytest.approx(2.5)
    assert last_k_mean([4.0, 3.0], 3) is None
    assert last_k_mean([], 1) is None
    with pytest.raises(ValueError):
        last_k_mean([1.0], 0)


# -- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_matches_scipy(confidence: float) -> None:
    values = [3.21, 3.25, 3.19, 3.30, 3.24]
    mean, std, lo, hi = mean_ci(values, confidence)
    want = t_ci(values, confidence)
    assert (mean, std, lo, hi) == pytest.approx(want, rel=1e-12)
    # The sample std (ddof=1), not the population one.
    assert std != pytest.approx(np.std(values, ddof=0), rel=1e-6)


def test_mean_ci_one_and_no_values() -> None:
    assert mean_ci([3.5]) == (3.5, None, None, None)
    assert mean_ci([]) == (None, None, None, None)


def test_paired_diff_matches_ttest_rel_and_pairs_by_seed() -> None:
    arm = {0: 3.10, 1: 3.17, 2: 3.15, 3: 3.24, 5: 2.0}  # seed 5: no baseline partner
    base = {0: 3.20, 1: 3.25, 2: 3.26, 3: 3.33, 4: 9.0}  # seed 4: no arm partner
    d = paired_diff(arm, base)
    seeds = [0, 1, 2, 3]
    a, b = np.array([arm[s] for s in seeds]), np.array([base[s] for s in seeds])
    diffs = a - b
    mean, _, lo, hi = t_ci(list(diffs))
    assert d.n_pairs == 4 and d.seeds == seeds
    assert d.mean_diff == pytest.approx(mean, rel=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert d.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert hi < 0 and d.verdict == "better"
    # Pairing matters: the unpaired difference of means (with seeds 4/5) would be very different.
    assert d.mean_diff != pytest.approx(np.mean(list(arm.values())) - np.mean(list(base.values())))


def test_verdicts() -> None:
    base = {0: 3.0, 1: 3.1, 2: 3.2}
    assert paired_diff({0: 2.9, 1: 3.01, 2: 3.08}, base).verdict == "better"
    assert paired_diff({0: 3.1, 1: 3.19, 2: 3.32}, base).verdict == "worse"
    assert paired_diff({0: 2.9, 1: 3.2, 2: 3.21}, base).verdict == "within noise"
    # Higher is better (e.g. an accuracy): the same CI below 0 is worse.
    assert paired_diff({0: 2.9, 1: 3.01, 2: 3.08}, base, lower_is_better=False).verdict == "worse"
    # One pair: a difference but no noise estimate; no pair at all: nothing.
    one = paired_diff({0: 2.5, 7: 1.0}, base)
    assert (one.verdict, one.n_pairs, one.ci_low, one.ci_high, one.p_value) == ("n/a", 1, None,
                                                                                None, None)
    assert one.mean_diff == pytest.approx(-0.5)
    none = paired_diff({9: 1.0}, base)
    assert (none.verdict, none.n_pairs, none.mean_diff) == ("n/a", 0, None)


def test_verdict_edge_cases() -> None:
    base = {0: 3.0, 1: 3.1}
    exact = paired_diff({0: 2.9, 1: 3.0}, base)  # identical differences: no spread
    assert exact.verdict == "better" and exact.p_value == 0.0
    assert exact.ci_low == pytest.approx(-0.1) and exact.ci_high == pytest.approx(-0.1)
    same = paired_diff(dict(base), base)
    assert same.verdict == "within noise" and same.p_value == 1.0
    diverged = paired_diff({0: math.nan, 1: 3.0}, base)
    assert diverged.verdict == "n/a"


# -- arms ---------------------------------------------------------------------------------------


def sweep() -> list[dict]:
    """Two arms over seeds 0-3; the LWS arm misses seed 3 (failed) and has a running seed 4."""
    base = [3.30, 3.25, 3.41, 3.28]
    lws = [3.21, 3.20, 3.30]
    jobs = [job(["model=match_uniform", f"train.seed={s}", "train.lr=1e-3"], v,
                val_loss_last_k=v + 0.01 * s)
            for s, v in enumerate(base)]
    jobs += [job(["model=match_lws", f"train.seed={s}", "train.lr=1e-3"], v,
                 val_loss_last_k=v + 0.02)
             for s, v in enumerate(lws)]
    jobs.append(job(["model=match_lws", "train.seed=3", "train.lr=1e-3"], None, "failed"))
    jobs.append(job(["model=match_lws", "train.seed=4", "train.lr=1e-3"], 1.0, "running"))
    return jobs


def test_group_arms_statistics_and_exclusions() -> None:
    arms = group_arms(sweep())
    assert [a.label for a in arms] == ["model=match_uniform", "model=match_lws"]
    uniform, lws = arms
    assert uniform.overrides == ("model=match_uniform", "train.lr=1e-3")
    assert (uniform.n_seeds, uniform.seeds, uniform.n_running, uniform.n_failed) == (4, [0, 1, 2,
                                                                                         3], 0, 0)
    assert (lws.n_seeds, lws.seeds, lws.n_running, lws.n_failed) == (3, [0, 1, 2], 1, 1)
    # The running job's 1.0 is not in the statistics.
    assert (lws.mean("val_loss"), lws.std("val_loss"), *lws.ci("val_loss")) == pytest.approx(
        t_ci([3.21, 3.20, 3.30]), rel=1e-12)
    last_k = [3.30, 3.26, 3.43, 3.31]
    assert uniform.metrics["val_loss_last_k"].values == pytest.approx(dict(enumerate(last_k)))
    assert uniform.mean("val_loss_last_k") == pytest.approx(np.mean(last_k))
    assert uniform.std("val_loss_last_k") == pytest.approx(np.std(last_k, ddof=1))


def test_group_arms_one_seed_and_order_and_plus() -> None:
    arms = group_arms([
        job(["a=1", "b=2", "train.seed=0"], 3.0),
        job(["b=2", "+a=1", "train.seed=1"], 3.2),  # the same arm, other order, + prefix
        job(["a=2", "b=2", "train.seed=0"], 3.1),
        job(["a=3", "b=2"], 3.3, "not started"),
    ])
    assert [a.label for a in arms] == ["a=1", "a=2", "a=3"]
    assert arms[0].n_seeds == 2 and arms[0].mean("val_loss") == pytest.approx(3.1)
    assert arms[1].n_seeds == 1 and arms[1].std("val_loss") is None
    assert arms[1].ci("val_loss") == (None, None)
    assert arms[2].n_seeds == 0 and arms[2].n_other == 1 and arms[2].mean("val_loss") is None


def test_compare_pairs_only_common_seeds() -> None:
    arms = group_arms(sweep())
    base = baseline_arm(arms, ["model=match_uniform"])
    (diff,) = compare(arms, base, "val_loss")
    a, b = np.array([3.21, 3.20, 3.30]), np.array([3.30, 3.25, 3.41])
    assert (diff.arm, diff.baseline, diff.metric) == ("model=match_lws", "model=match_uniform",
                                                      "val_loss")
    assert diff.n_pairs == 3 and diff.seeds == [0, 1, 2]
    assert diff.mean_diff == pytest.approx(np.mean(a - b))
    assert diff.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert (diff.ci_low, diff.ci_high) == pytest.approx(t_ci(list(a - b))[2:], rel=1e-12)


def test_baseline_selection() -> None:
    arms = group_arms(sweep() + [job(["model=match_lws", "train.lr=3e-3", "train.seed=0"], 3.0)])
    assert baseline_arm(arms, None) is arms[0]
    assert baseline_arm(arms, []) is arms[0]
    assert baseline_arm(arms, ["+model=match_uniform"]) is arms[0]
    assert baseline_arm(arms, ["model=match_lws", "train.lr=3e-3"]) is arms[2]
    with pytest.raises(ValueError, match=r"'model=gqa' matches no arm.*model=match_uniform"):
        baseline_arm(arms, ["model=gqa"])
    with pytest.raises(ValueError, match=r"'model=match_lws' matches 2 arms"):
        baseline_arm(arms, ["model=match_lws"])
    with pytest.raises(ValueError, match="no arms"):
        baseline_arm([], None)


def test_arm_table_markdown() -> None:
    arms = group_arms(sweep())
    diffs = compare(arms, arms[0], "val_loss")
    table = arm_table_markdown(arms, diffs, ["val_loss", "val_loss_last_k"])
    lines = table.splitlines()
    assert len(lines) == 2 + len(arms)
    assert "Δ val_loss vs baseline [95% CI]" in lines[0] and "val_loss verdict" in lines[0]
    mean, std, lo, hi = t_ci([3.30, 3.25, 3.41, 3.28])
    assert f"{mean:.4f} ± {std:.4f}" in lines[2] and f"[{lo:.4f}, {hi:.4f}]" in lines[2]
    assert "baseline" in lines[2]
    d = diffs[0]
    assert f"{d.mean_diff:.4f} [{d.ci_low:.4f}, {d.ci_high:.4f}] (3 pairs)" in lines[3]
    assert d.verdict in lines[3] and "1 running, 1 failed" in lines[3]
    # One seed: the std is shown as missing.
    single = group_arms([job(["x=1", "train.seed=0"], 3.0), job(["x=2", "train.seed=0"], 3.5)])
    one = arm_table_markdown(single, compare(single, single[0], "val_loss"), ["val_loss"])
    assert "3.0000 ± –" in one and "0.5000 – (1 pair) | n/a" in one
