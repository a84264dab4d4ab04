"""The prepared GPU benchmark, run unchanged on CPU with tiny models: only the device is untested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from olmo_exp.bench import gpu as benchmark_gpu

# Shrink all three models (uniform, LWS, GQA with 4 KV heads of 8) and the batch; everything else
# (fsdp, bf16, compile requested, the arms, the raw loop, the JSON) is the GPU command's.
TINY_MODELS = ["model.d_model=64", "model.n_layers=2", "model.n_heads=8", "model.head_dim=16",
               "model.vocab_size=null", "data.sequence_length=64", "train.global_batch_size=4",
               "train.micro_batch_size=2"]


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_cpu(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    # --budget-s: the 8-minute bound is the GPU's; a shared 2-core CPU may be far slower.
    args = [sys.executable, "-m", "olmo_exp.bench.gpu", "--steps", "3", "--warmup", "1",
            "--peak-tflops", "0.1", "--budget-s", "3000", "--out", str(out), *TINY_MODELS,
            f"data.output_dir={data_dir}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=3000,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    arms = {(a["model"], a["impl"]): a for a in results["arms"]}
    assert list(arms) == [(m, i) for m in ("uniform", "lws", "gqa") for i in ("olmo-exp", "raw")]
    for arm in arms.values():
        assert "error" not in arm, arm
        assert arm["tokens_per_s"] > 0 and arm["steps_timed"] >= 1 and arm["max_rss_gib"] > 0
        # MFU is tokens/s x FLOPs/token over the given peak, nothing else.
        assert arm["mfu_percent"] == pytest.approx(
            100 * arm["tokens_per_s"] * arm["flops_per_token"] / 0.1e12, abs=0.01)
        assert arm["peak_gpu_gib"] is None  # CPU
        assert arm["resolved"]["precision"] == "bf16_params_fp32_reduce"
        assert arm["resolved"]["compile"] is False  # requested, but olmo-core compiles on CUDA only
    for model in ("uniform", "lws", "gqa"):  # the raw loop trains exactly the run's model
        exp, raw = arms[(model, "olmo-exp")], arms[(model, "raw")]
        assert (exp["n_params"], exp["flops_per_token"]) == (raw["n_params"], raw["flops_per_token"])
    uniform = arms[("uniform", "raw")]
    assert arms[("gqa", "raw")]["n_params"] < uniform["n_params"]  # fewer K/V projections
    assert arms[("lws", "raw")]["flops_per_token"] != uniform["flops_per_token"]
    assert all(v is not None for v in results["ratios"].values()), results["ratios"]
    assert results["ratios"]["raw lws/uniform mfu_percent"] == pytest.approx(
        arms[("lws", "raw")]["mfu_percent"] / uniform["mfu_percent"], abs=0.002)
    # Partial results: every arm's row is printed (in order) before the closing ratios.
    lines = proc.stdout.splitlines()
    names = [[m, impl] for m in ("uniform", "lws", "gqa") for impl in ("olmo-exp", "raw")]
    rows = [n for n, line in enumerate(lines) if line.split()[:2] in names]
    assert len(rows) == 6 and rows == sorted(rows)
    assert rows[-1] < next(n for n, line in enumerate(lines) if "lws/uniform" in line)
    assert not list(out.glob("*/run/checkpoints/*"))  # train.checkpoint_interval=0: none written


def test_an_arm_is_stopped_at_its_bound(tmp_path: Path) -> None:
    start = time.monotonic()
    code, wall, _ = benchmark_gpu.run_bounded(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log.txt", 1.0)
    assert code is None and 1.0 < wall < 10 and time.monotonic() - start < 10
    code, _, _ = benchmark_gpu.run_bounded([sys.executable, "-c", "raise SystemExit(3)"],
                                           tmp_path / "log.txt", 30.0)
    assert code == 3
    flag = tmp_path / "measured"
    code, wall, _ = benchmark_gpu.run_bounded(
        [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); "
                               "time.sleep(60)"], tmp_path / "log.txt", 30.0, done=flag.exists)
    assert code == "done" and wall < 20


def test_ratios_skip_failed_arms_and_peaks_by_device_name() -> None:
    arms = [{"model": "uniform", "impl": "raw", "tokens_per_s": 100.0, "mfu_percent": 40.0},
            {"model": "lws", "impl": "raw", "tokens_per_s": 90.0, "mfu_percent": 38.0},
            {"model": "gqa", "impl": "raw", "error": "stopped at its time bound"}]
    got = benchmark_gpu.ratios(arms)
    assert got["raw lws/uniform mfu_percent"] == 0.95 and got["raw lws/uniform tokens_per_s"] == 0.9
    assert got["raw gqa/uniform mfu_percent"] is None and got["olmo-exp lws/uniform mfu_percent"] is None
    assert benchmark_gpu.peak_flops("NVIDIA H200", None) == 989.5e12
    assert benchmark_gpu.peak_flops("NVIDIA H100 80GB HBM3", None) == 989.5e12
    assert benchmark_gpu.peak_flops("NVIDIA H100 PCIe", None) == 756.5e12
    assert benchmark_gpu.peak_flops("CPU (2 cores)", None) is None
    assert benchmark_gpu.peak_flops("CPU (2 cores)", 2.0) == 2e12


def test_an_earlier_benchmark_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "uniform-olmo-exp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "olmo_exp.bench.gpu", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds an earlier benchmark" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["uniform-olmo-exp"]
