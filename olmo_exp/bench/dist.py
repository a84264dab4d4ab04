"""Throughput of one model under several ``dist`` settings, side by side in one command.

    python -m olmo_exp.bench.dist                       # CPU: dist=single vs dist=fsdp x2
    python -m olmo_exp.bench.dist model=lws_tiny train.max_steps=30
    # GPU (8 x H100): MFU of a 1B model, FSDP bf16 + compile, vs. nothing else
    python -m olmo_exp.bench.dist model=olmo2_1b data=wiki data.sequence_length=4096 \\
        train.global_batch_size=64 train.micro_batch_size=4 \\
        --arm "dist=fsdp dist.nproc_per_node=8 dist.mixed_precision=true dist.compile=true"

Each arm is one real ``run.py`` training run (same data, model, seed and global batch; positional
arguments are Hydra overrides shared by every arm, ``--arm`` adds per-arm ``dist`` overrides).
Tokens/s come from olmo-core's speed monitor (``throughput/device/TPS``, per rank): the median over
the steps after ``--warmup``, times the data-parallel world size. MFU is printed when olmo-core
reports it (CUDA with a known peak, bf16). Results: a table on stdout and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from olmo_exp.bench.gpu import device_name

# A short CPU run of the FACTS speed anchor (OLMo-2-style d256/4 layers, vocab 8192, seq 256);
# no checkpoints, evals or samples inside the timed steps.
DEFAULTS = [
    "train.max_steps=30",
    "train.global_batch_size=16",
    "train.micro_batch_size=8",
    "train.warmup_steps=2",
    "train.log_interval=1",
    "train.checkpoint_interval=100000",
    "train.eval_interval=0",
    "generate.interval=0",
    "generate.max_new_tokens=1",
]
DEFAULT_ARMS = ["dist=single", "dist=fsdp dist.nproc_per_node=2"]


@dataclass
class ArmResult:
    arm: str
    world_size: int
    tokens_per_s: float
    tokens_per_s_per_rank: float
    mfu_percent: float | None
    steps_timed: int
    wall_s: float
    run_dir: str


def world_size(overrides: list[str]) -> int:
    from olmo_exp.config.compose import compose_run
    from olmo_exp.runtime.launch import topology

    return topology(compose_run(overrides).dist).world_size


def run_arm(arm: str, common: list[str], out: Path, warmup: int, threads: int) -> ArmResult:
    overrides = [*DEFAULTS, *common, *shlex.split(arm)]
    world = world_size(overrides)
    run_dir = out / arm.replace(" ", "_").replace("=", "-").replace("/", "-")
    args = [sys.executable, "-m", "olmo_exp", *overrides, f"hydra.run.dir={run_dir}"]
    # Same cores for every arm: all of them to one process, or an equal share to each rank.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // world))}
    print(f"[{arm}] {' '.join(shlex.quote(a) for a in args[1:])}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"[{arm}] run.py exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    timed = [r for r in records if r["step"] > warmup and "throughput/device/TPS" in r]
    if not timed:
        sys.exit(f"[{arm}] no throughput after {warmup} warm-up steps: raise train.max_steps")
    tps = statistics.median(r["throughput/device/TPS"] for r in timed)
    mfus = [r["throughput/device/MFU"] for r in timed if "throughput/device/MFU" in r]
    return ArmResult(arm=arm, world_size=world, tokens_per_s=tps * world, tokens_per_s_per_rank=tps,
                     mfu_percent=statistics.median(mfus) if mfus else None,
                     steps_timed=len(timed), wall_s=wall, run_dir=str(run_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides shared by every arm")
    parser.add_argument("--arm", action="append", default=None,
                        help=f"dist overrides of one arm (repeatable); default: {DEFAULT_ARMS}")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the arms this many times, interleaved; keep each arm's best "
                             "(a shared host's other load only ever slows a run down)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads per arm, split between its ranks")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the run dirs and results.json go (default outputs/benchmark_dist/<now>)")
    args = parser.parse_args(argv)
    out = (args.out or Path("outputs/benchmark_dist") / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    arms = args.arm or DEFAULT_ARMS
    common = list(args.overrides)
    if not any(o.startswith("data.output_dir=") for o in common):
        common.append(f"data.output_dir={(out / 'data').resolve()}")

    best: dict[str, ArmResult] = {}
    for i in range(args.repeat):
        for arm in arms:
            r = run_arm(arm, common, out / f"try{i}" if args.repeat > 1 else out, args.warmup,
                        args.threads)
            if arm not in best or r.tokens_per_s > best[arm].tokens_per_s:
                best[arm] = r
    results = [best[arm] for arm in arms]
    base = results[0].tokens_per_s
    device = device_name()
    print(f"\n{device}; shared overrides: {' '.join(common) or '-'}")
    print(f"{'arm':<52} {'ranks':>5} {'tokens/s':>10} {'per rank':>9} {'vs first':>8} {'MFU %':>6}")
    for r in results:
        mfu = f"{r.mfu_percent:.1f}" if r.mfu_percent is not None else "-"
        print(f"{r.arm:<52} {r.world_size:>5} {r.tokens_per_s:>10.0f} {r.tokens_per_s_per_rank:>9.0f} "
              f"{r.tokens_per_s / base:>8.2f} {mfu:>6}")
    (out / "results.json").write_text(json.dumps(
        {"device": device, "overrides": common, "warmup": args.warmup, "repeat": args.repeat,
         "arms": [asdict(r) for r in results]}, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
