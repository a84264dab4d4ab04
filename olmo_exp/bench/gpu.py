"""MFU of the 1B uniform, LWS and GQA models on one GPU, side by side with a raw olmo-core loop.

    python -m olmo_exp.bench.gpu                      # one GPU, < 8 min including compile
    python -m olmo_exp.bench.gpu --peak-tflops 989    # a GPU missing from the peak table

Three models at sequence length 4096, each trained twice for the same fixed number of steps:
``uniform`` = ``model=olmo2_1b``, ``lws`` = ``model=openelm_1_1b`` (OpenELM-1.1B's layer-wise
geometry), ``gqa`` = ``olmo2_1b`` with 4 KV heads (4 query heads per KV head). All three use
olmo-core's 1B vocabulary size (100,352; the tokens come from the offline Wikipedia sample, whose
BPE ids are a subset), ``dist=fsdp`` with one rank, bf16 parameters with fp32 reduction, and
``torch.compile``. For each model:

- ``olmo-exp``: ``python run.py ...`` as a user types it; tokens/s from its ``metrics.jsonl``
  (olmo-core's speed monitor), peak GPU memory from olmo-core's GPU memory monitor;
- ``raw``: a bare olmo-core loop in a fresh process: the same ``TransformerConfig``, compiled,
  ``apply_fsdp`` (bf16 params, fp32 reduce) on a 1-rank mesh, the same AdamW, micro-batches, token
  files and steps; no trainer, callbacks or data loader.

MFU = tokens/s x the model's FLOPs per token (olmo-core's ``num_flops_per_token``) / the device's
dense bf16 peak (``olmo_exp/build/peaks.py``, or ``--peak-tflops``; none on CPU, so no MFU there unless given).
The first ``--warmup`` steps (compile, allocator warm-up) are left out of every figure. Printed
after each arm, and written to ``results.json`` after each arm, so a cut-short run keeps what it
measured. Each arm is bounded (``--budget-s`` shared by the arms still to run); an arm that runs
out of time is recorded as such and the rest still run.

Any further positional arguments are Hydra overrides for every arm: the CPU test runs this exact
command with tiny-model overrides (``model.d_model=64 ...``), so only the device itself is untested
on a CPU-only machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olmo_exp.base.files import read_jsonl
from olmo_exp.build.peaks import peak_flops_per_second
from olmo_exp.config.compose import compose_run

MODELS: dict[str, list[str]] = {
    "uniform": ["model=olmo2_1b"],
    "lws": ["model=openelm_1_1b"],
    "gqa": ["model=olmo2_1b", "model.n_kv_heads=4"],
}
IMPLS = ("olmo-exp", "raw")
# Relative time an arm gets from the budget: LWS blocks differ in shape, so torch.compile compiles
# more than one block graph (the uniform and GQA models compile one).
COMPILE_WEIGHT = {"lws": 1.5}

# The GPU geometry: 8 x 4096 tokens per step in micro-batches of 4 sequences (fits a 1B model
# without activation checkpointing in 80 GB); no checkpoints, evals or samples in the timed steps.
COMMON = [
    "data.sequence_length=4096",
    "model.max_sequence_length=4096",
    "model.vocab_size=100352",
    "train.global_batch_size=8",
    "train.micro_batch_size=4",
    "train.warmup_steps=2",
    "train.log_interval=1",
    "train.checkpoint_interval=0",
    "train.eval_interval=0",
    "generate.interval=0",
    "generate.max_new_tokens=1",
    "dist=fsdp",
    "dist.nproc_per_node=1",
    "dist.mixed_precision=true",
    "dist.compile=true",
]


def peak_flops(device: str, override_tflops: float | None) -> float | None:
    """The device line's dense bf16 peak: the same table training's MFU uses (build/peaks.py)."""
    if device.startswith("CPU") and override_tflops is None:
        return None
    return peak_flops_per_second(device, override_tflops)


def device_name() -> str:
    """The benchmarks' device line: the GPUs (the name is what build/peaks.py matches), or the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores)"


# -- one arm, in a child process with a deadline ------------------------------------------------


def run_bounded(args: list[str], log_path: Path, timeout_s: float,
                done: Callable[[], bool] = lambda: False) -> tuple[int | str | None, float, float]:
    """Run a child until it exits, ``done()`` says its measurement is complete, or the time bound.

    Returns (exit code, or "done", or None when stopped at the bound; wall s; its max RSS in GiB).
    """
    start = time.monotonic()
    with open(log_path, "w") as log_file:
        # Own session: a stop takes the whole tree (torch compile workers included).
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, time.monotonic() - start, usage.ru_maxrss / 2**20
            finished = done()
            if finished or time.monotonic() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                return ("done" if finished else None), time.monotonic() - start, usage.ru_maxrss / 2**20
            time.sleep(0.5)


def olmo_exp_arm(overrides: list[str], steps: int, warmup: int, arm_dir: Path,
                 timeout_s: float) -> dict[str, Any]:
    """``run.py`` as a user types it; stopped once its timed steps are in metrics.jsonl (what
    follows, the end-of-training sample and teardown, is not measured and would only cost time)."""
    run_dir = arm_dir / "run"
    metrics = run_dir / "metrics.jsonl"
    # A step's record lands in metrics.jsonl up to two steps later (olmo-core reports metrics one
    # step late; the file callback merges late reports into the step's record before writing it).
    needed = max(steps - warmup - 2, 1)

    def timed() -> list[dict[str, Any]]:
        return [r for r in read_jsonl(metrics) if r["step"] > warmup and "throughput/device/TPS" in r]

    args = [sys.executable, "-m", "olmo_exp", *overrides, f"train.max_steps={steps}",
            f"hydra.run.dir={run_dir}"]
    code, wall, rss = run_bounded(args, arm_dir / "log.txt", timeout_s,
                                  done=lambda: len(timed()) >= needed)
    result: dict[str, Any] = {"wall_s": round(wall, 1), "max_rss_gib": round(rss, 2),
                              "command": shlex.join(args[1:])}
    records, steps_timed = read_jsonl(metrics), timed()
    if code not in (0, "done") or len(steps_timed) < needed:
        return {**result, "error": _failure(code, timeout_s, arm_dir / "log.txt")}
    summary = json.loads((run_dir / "model_summary.json").read_text())
    gpu = [r["gpu_memory/GPU active mem (GiB)"] for r in records
           if "gpu_memory/GPU active mem (GiB)" in r]
    return {**result,
            "tokens_per_s": statistics.median(r["throughput/device/TPS"] for r in steps_timed),
            "steps_timed": len(steps_timed),
            "flops_per_token": summary["flops_per_token"],
            "n_params": summary["n_params"],
            "peak_gpu_gib": round(max(gpu), 2) if gpu else None,
            "resolved": summary.get("dist")}


def raw_arm(overrides: list[str], steps: int, warmup: int, arm_dir: Path,
            timeout_s: float) -> dict[str, Any]:
    args = [sys.executable, "-m", "olmo_exp.bench.gpu", "--raw-loop", str(arm_dir / "raw.json"),
            "--steps", str(steps), "--warmup", str(warmup), *overrides]
    code, wall, rss = run_bounded(args, arm_dir / "log.txt", timeout_s)
    result: dict[str, Any] = {"wall_s": round(wall, 1), "max_rss_gib": round(rss, 2),
                              "command": shlex.join(args[1:])}
    if code != 0:
        return {**result, "error": _failure(code, timeout_s, arm_dir / "log.txt")}
    return {**result, **json.loads((arm_dir / "raw.json").read_text())}


def _failure(code: int | str | None, timeout_s: float, log_path: Path) -> str:
    if code is None:
        return f"stopped at its time bound ({timeout_s:.0f} s); log: {log_path}"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    return f"exited {code}: {tail[0][:300]}; log: {log_path}"


def raw_loop(overrides: list[str], steps: int, warmup: int, out_path: Path) -> None:
    """A bare olmo-core training loop at the run's geometry, precision and compile setting."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from olmo_core.data.utils import get_labels
    from torch.distributed.device_mesh import init_device_mesh

    from olmo_exp.data.prep import prepare

    config = compose_run(overrides)
    manifest = prepare(config.data)  # cached by the benchmark before any arm
    train, seq = config.train, config.data.sequence_length
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1,
                            init_method=f"file://{out_path.parent / 'pg-store'}")
    try:
        mesh = init_device_mesh(device.type, (1,))
        model_cfg = config.model.build_config(config.model.padded_vocab_size(manifest.vocab_size))
        model_cfg.init_seed = train.seed
        model = model_cfg.build(init_device="meta")
        # The order olmo-core's train module uses: compile, then FSDP, then materialize.
        if config.dist.compile_enabled(cuda):
            model.apply_compile()
        bf16 = config.dist.mixed_precision_enabled(cuda)
        model.apply_fsdp(dp_mesh=mesh, param_dtype=torch.bfloat16 if bf16 else None,
                         reduce_dtype=torch.float32)
        model.init_weights(max_seq_len=seq, max_local_microbatch_size=train.micro_batch_size * seq,
                           device=device)
        optim_cfg = train.train_module_config(sequence_length=seq).optim
        optim = optim_cfg.build(model)

        shards = [np.memmap(p, dtype=manifest.dtype, mode="r") for p in manifest.paths("train")]
        shards = [s for s in shards if len(s) >= seq]
        rng = np.random.default_rng(train.seed)

        def batch() -> torch.Tensor:
            rows = []
            for _ in range(train.global_batch_size):
                shard = shards[rng.integers(len(shards))]
                i = rng.integers(len(shard) // seq)
                rows.append(shard[i * seq:(i + 1) * seq])
            return torch.from_numpy(np.stack(rows).astype(np.int64)).to(device, non_blocking=True)

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tokens = batch()
            optim.zero_grad(set_to_none=True)
            for chunk in tokens.split(train.micro_batch_size):
                out = model(chunk, labels=get_labels({"input_ids": chunk}))
                (out.loss * len(chunk) / len(tokens)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            optim.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            print(f"raw step {len(times)}: {times[-1]:.3f} s, loss {out.loss.item():.3f}", flush=True)
        timed = times[warmup:]
        result = {
            "tokens_per_s": train.global_batch_size * seq / statistics.median(timed),
            "steps_timed": len(timed),
            "flops_per_token": model.num_flops_per_token(seq),
            "n_params": model.num_params,
            "peak_gpu_gib": (round(torch.cuda.memory_stats(device)["active_bytes.all.peak"] / 2**30, 2)
                             if cuda else None),
            "resolved": {"precision": "bf16_params_fp32_reduce" if bf16 else "fp32",
                         "compile": config.dist.compile_enabled(cuda)},
        }
        out_path.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


# -- the benchmark --------------------------------------------------------------------------------


def ratios(arms: list[dict[str, Any]]) -> dict[str, float | None]:
    """LWS/uniform and GQA/uniform (MFU and tokens/s, per implementation), olmo-exp/raw per model."""
    by = {(a["model"], a["impl"]): a for a in arms if "error" not in a}
    out: dict[str, float | None] = {}

    def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
        if a is None or b is None or a.get(key) is None or not b.get(key):
            return None
        return round(a[key] / b[key], 3)

    for impl in IMPLS:
        for model in ("lws", "gqa"):
            for key in ("mfu_percent", "tokens_per_s"):
                out[f"{impl} {model}/uniform {key}"] = ratio(by.get((model, impl)),
                                                             by.get(("uniform", impl)), key)
    for model in MODELS:
        out[f"{model} olmo-exp/raw tokens_per_s"] = ratio(by.get((model, "olmo-exp")),
                                                          by.get((model, "raw")), "tokens_per_s")
    return out


def format_row(a: dict[str, Any]) -> str:
    if "error" in a:
        return f"{a['model']:<8} {a['impl']:<9} {a['error']}"
    warn = "  (dynamo recompile limit hit: some blocks ran eager)" if a["recompile_limit_hit"] else ""

    def num(key: str, fmt: str) -> str:
        return format(a[key], fmt) if a.get(key) is not None else "-"

    return (f"{a['model']:<8} {a['impl']:<9} {num('tokens_per_s', '>10,.0f')} "
            f"{num('mfu_percent', '>6.1f'):>6} {num('peak_gpu_gib', '>8.1f'):>8} "
            f"{num('max_rss_gib', '>7.1f'):>7} {a['flops_per_token']:>14,} {a['steps_timed']:>5} "
            f"{a['wall_s']:>6.0f}{warn}")


HEADER = (f"{'model':<8} {'impl':<9} {'tokens/s':>10} {'MFU %':>6} {'GPU GiB':>8} {'RSS GiB':>7} "
          f"{'FLOPs/token':>14} {'steps':>5} {'wall s':>6}")


def no_gpu_defaults(models: list[str], overrides: list[str]) -> None:
    """No GPU, no overrides: check every arm's config as run.py would, then stop in one line."""
    import torch

    from olmo_exp.base.errors import ConfigError
    from olmo_exp.data.check import check_run
    if overrides or torch.cuda.is_available():
        return
    for model in models:
        try:
            check_run(compose_run([*COMMON, *MODELS[model]]))
        except ConfigError as e:
            sys.exit(f"error: {e}")
    sys.exit(f"bench.gpu: no GPU here ({device_name()}): its defaults train 1B models (the "
             f"configs of {', '.join(models)} check out); run it on a GPU, or add tiny-model "
             "overrides (as tests/test_benchmark_gpu.py does) to run it on CPU")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every arm")
    parser.add_argument("--steps", type=int, default=16, help="training steps per arm")
    parser.add_argument("--warmup", type=int, default=5,
                        help="first steps left out of every figure (compile, warm-up)")
    parser.add_argument("--budget-s", type=float, default=450,
                        help="seconds for the whole benchmark (data prep included); each arm "
                             "is bounded by its share of what is left when it starts (LWS x1.5)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {list(MODELS)}")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak (default: olmo_exp/build/peaks.py by GPU name)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run dirs + results.json (default outputs/benchmark_gpu/<now>)")
    parser.add_argument("--raw-loop", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps must be > --warmup={args.warmup}")
    models = args.models.split(",")
    if unknown := [m for m in models if m not in MODELS]:
        parser.error(f"--models: unknown {unknown}; valid: {list(MODELS)}")
    if args.raw_loop is not None:  # internal: the raw arm's child process
        raw_loop(args.overrides, args.steps, args.warmup, args.raw_loop)
        return

    start = time.monotonic()
    out = (args.out or Path("outputs/benchmark_gpu") / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    if out.exists() and any(p.name != "data" for p in out.iterdir()):
        # Arm dirs are read while they fill (metrics.jsonl): an old one would be read as new.
        parser.error(f"--out {out} holds an earlier benchmark; use a new directory")
    no_gpu_defaults(models, args.overrides)
    out.mkdir(parents=True, exist_ok=True)
    shared = [*COMMON, *args.overrides]
    if not any(o.startswith("data.output_dir=") for o in shared):
        shared.append(f"data.output_dir={out / 'data'}")

    from olmo_exp.data.prep import prepare

    prepare(compose_run(shared).data)  # once, before the arms (they reuse it)
    device = device_name()
    peak = peak_flops(device, args.peak_tflops)
    print(f"{device}; peak {peak / 1e12:.1f} TFLOP/s" if peak else f"{device}; peak unknown: no MFU "
          "(--peak-tflops sets it)", flush=True)
    print(HEADER, flush=True)

    results: dict[str, Any] = {
        "device": device, "peak_flops": peak, "steps": args.steps, "warmup": args.warmup,
        "overrides": shared, "models": {m: MODELS[m] for m in models}, "arms": [],
    }
    plan = [(m, impl) for m in models for impl in IMPLS]
    for i, (model, impl) in enumerate(plan):
        remaining = args.budget_s - (time.monotonic() - start)
        weights = [COMPILE_WEIGHT.get(m, 1.0) for m, _ in plan[i:]]
        timeout = max(remaining * weights[0] / sum(weights), 1.0)
        arm_dir = out / f"{model}-{impl}"
        arm_dir.mkdir(parents=True, exist_ok=True)
        run = olmo_exp_arm if impl == "olmo-exp" else raw_arm
        arm = {"model": model, "impl": impl,
               **run([*shared, *MODELS[model]], args.steps, args.warmup, arm_dir, timeout)}
        log_text = (arm_dir / "log.txt").read_text(errors="replace")
        # LWS blocks differ in shape: past dynamo's recompile limit a block silently runs eager.
        arm["recompile_limit_hit"] = "recompile_limit" in log_text or "cache_size_limit" in log_text
        if "error" not in arm:
            arm["mfu_percent"] = (round(100 * arm["tokens_per_s"] * arm["flops_per_token"] / peak, 2)
                                  if peak else None)
        results["arms"].append(arm)
        results["ratios"] = ratios(results["arms"])
        results["wall_s"] = round(time.monotonic() - start, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(format_row(arm), flush=True)

    print()
    for key, value in results["ratios"].items():
        print(f"{key:<40} {value if value is not None else '-'}")
    print(f"total {results['wall_s']:.0f} s; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
