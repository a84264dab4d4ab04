"""What a sweep will cost before it runs: every job's training FLOPs (model_summary.json's FLOPs per
token x the tokens its train.size_rule or max_steps gives) and the GPU-hours that is at a GPU's
dense bf16 peak (olmo_exp/build/peaks.py) and an assumed MFU.

    python -m olmo_exp.sweep.cost +sweep=ladder_lws_gpu                 # H100, MFU 40%
    python -m olmo_exp.sweep.cost +sweep=isoflop_gpu --gpu "NVIDIA H200" --mfu 0.35

Nothing is built, prepared or launched: the counts come from the config (olmo_exp/config/sizing.py,
equal to olmo-core's; tests/test_sizing.py), the vocab from the tokenizer.
"""

from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.build.peaks import peak_flops_per_second
from olmo_exp.config import sizing
from olmo_exp.config.compose import compose, run_config
from olmo_exp.config.topology import Host
from olmo_exp.data.check import check_run
from olmo_exp.sweep.report import expand_jobs


def job_costs(overrides: list[str]) -> list[dict]:
    """One row per job of ``-m`` with these overrides: its sweep overrides, N, tokens, FLOPs."""
    cfg = compose(overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) or {}
    rows = []
    for job in expand_jobs(params, overrides):
        config = run_config(compose(job))
        vocab = check_run(config, Host(launched=None, gpus=1)).vocab_size
        seq = config.data.sequence_length
        tokens = config.train.max_steps * config.train.global_batch_size * seq
        fpt = sizing.flops_per_token(config.model, seq, config.model.padded_vocab_size(vocab))
        rows.append({"job": " ".join(o for o in job if o not in overrides),
                     "n_layer_params": sizing.layer_params(config.model), "tokens": tokens,
                     "flops": fpt * tokens})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", default="NVIDIA H100 80GB HBM3", help="device name (peaks.py)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilization")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py -m")
    args = parser.parse_args(argv)
    peak = peak_flops_per_second(args.gpu)
    if peak is None:
        print(f"error: --gpu={args.gpu!r} is not in olmo_exp/build/peaks.py's table", file=sys.stderr)
        return 2
    try:
        rows = job_costs(args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_second = peak * args.mfu
    print(f"{'job':<60} {'N (layers)':>12} {'tokens':>15} {'FLOPs':>10} {'GPU-h':>8}")
    for r in rows:
        print(f"{r['job']:<60} {r['n_layer_params']:>12,} {r['tokens']:>15,} {r['flops']:>10.2e} "
              f"{r['flops'] / per_second / 3600:>8.1f}")
    total = sum(r["flops"] for r in rows)
    print(f"total {total:.2e} FLOPs = {total / per_second / 3600:,.0f} GPU-hours on {args.gpu} "
          f"at {args.mfu:.0%} MFU ({peak / 1e12:,.1f} TFLOP/s dense bf16 peak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
