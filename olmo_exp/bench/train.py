"""Training speed of a run, side by side with raw olmo-core on the same model, data and batch.

    python -m olmo_exp.bench.train                      # the default run (olmo_tiny, wiki_sample)
    python -m olmo_exp.bench.train --steps 20 model=gqa_3kv data.sequence_length=128

Reports, from one invocation: the time from process start to the first training step (data
already prepared; cold preparation time is reported separately), olmo-exp's steady-state training
tokens/s, and raw olmo-core's tokens/s (the same TransformerConfig and token files, a bare
forward/backward/AdamW loop in this process), and their ratio. Absolute numbers are noisy on
shared machines; the ratio is the number to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from olmo_exp.base.files import read_jsonl
from olmo_exp.config.compose import compose_run
from olmo_exp.data.check import check_run

WARMUP_STEPS = 2  # excluded from steady-state throughput (first-step allocation, caches)


def run_olmo_exp(overrides: list[str], steps: int, run_dir: Path) -> dict:
    """``python run.py`` as a user runs it; timings from its metrics.jsonl wall clock."""
    args = [sys.executable, "-m", "olmo_exp", *overrides, f"train.max_steps={steps}",
            "train.log_interval=1", "train.eval_interval=0", "generate.interval=0",
            f"train.checkpoint_interval={steps}", f"hydra.run.dir={run_dir}"]
    start = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    total = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"run.py failed:\n{proc.stderr[-4000:]}")
    records = read_jsonl(run_dir / "metrics.jsonl")
    times = {r["step"]: r["wall_time"] for r in records if "wall_time" in r}
    first, last = WARMUP_STEPS, steps
    return {"start_to_first_step_s": times[1] - start, "steady_step_s":
            (times[last] - times[first]) / (last - first), "total_s": total}


def run_raw_olmo_core(config, steps: int) -> float:
    """Seconds per optimizer step of a bare olmo-core loop: same model config, data, batch, optimizer."""
    import numpy as np
    import torch
    from olmo_core.data.utils import get_labels

    from olmo_exp.data.prep import prepare

    manifest = prepare(config.data)
    seq, train = config.data.sequence_length, config.train
    model_cfg = config.model.build_config(config.model.padded_vocab_size(manifest.vocab_size))
    model_cfg.init_seed = train.seed
    model = model_cfg.build(init_device="cpu")
    model.init_weights(max_seq_len=seq, device=torch.device("cpu"))
    optim = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=(0.9, 0.95),
                              weight_decay=train.weight_decay)
    tokens = np.memmap(manifest.paths("train")[0], dtype=manifest.dtype, mode="r")
    n_seq = len(tokens) // seq
    rng = np.random.default_rng(train.seed)
    micro = train.micro_batch_size
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = rng.integers(0, n_seq, size=train.global_batch_size)
        batch = torch.from_numpy(np.stack([tokens[i * seq:(i + 1) * seq] for i in idx])
                                 .astype(np.int64))
        optim.zero_grad(set_to_none=True)
        for chunk in batch.split(micro):
            out = model(chunk, labels=get_labels({"input_ids": chunk}))
            (out.loss * len(chunk) / len(batch)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        optim.step()
        times.append(time.perf_counter() - t0)
    steady = times[WARMUP_STEPS:]
    return sum(steady) / len(steady)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must be > {WARMUP_STEPS + 1}")

    if not any(o.startswith("train.warmup_steps=") for o in args.overrides):
        args.overrides.append(f"train.warmup_steps={min(10, args.steps)}")
    config = compose_run(args.overrides)
    check_run(config)  # as run.py does: one-line errors, and resolves train.micro_batch_size=null
    from olmo_exp.data.prep import prepare

    t0 = time.time()
    prepare(config.data)  # cold or cached; the run below then reuses it
    prep_s = time.time() - t0

    tokens_per_step = config.train.global_batch_size * config.data.sequence_length
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_olmo_exp(args.overrides, args.steps, Path(tmp) / "run")
    raw_step_s = run_raw_olmo_core(config, args.steps)
    result = {
        "model": config.model.name,
        "tokens_per_step": tokens_per_step,
        "threads": int(os.environ["OMP_NUM_THREADS"]),
        "data_prepare_s": round(prep_s, 2),
        "start_to_first_step_s": round(ours["start_to_first_step_s"], 2),
        "olmo_exp_tokens_per_s": round(tokens_per_step / ours["steady_step_s"], 1),
        "raw_olmo_core_tokens_per_s": round(tokens_per_step / raw_step_s, 1),
        "ratio_olmo_exp_to_raw": round(raw_step_s / ours["steady_step_s"], 3),
    }
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
