"""The prepared GPU benchmark, run unchanged on CPU with tiny models: only the device is untested."""

from __future__ import annotations

import json
import os
import re
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
        assert arm["steps_timed"] >= 1 and arm["max_rss_gib"] > 0
        assert arm["mfu_percent"] is not None  # --peak-tflops on a CPU (MFU's math: the test below)
        assert arm["peak_gpu_gib"] is None  # CPU
        assert arm["resolved"]["precision"] == "bf16_params_fp32_reduce"
        assert arm["resolved"]["compile"] is False  # requested, but olmo-core compiles on CUDA only
    for model in ("uniform", "lws", "gqa"):  # the raw loop trains exactly the run's model
        exp, raw = arms[(model, "olmo-exp")], arms[(model, "raw")]
        assert (exp["n_params"], exp["flops_per_token"]) == (raw["n_params"], raw["flops_per_token"])
        # tokens/s from each arm's own files, read here: run.py's metrics.jsonl (olmo-core's
        # per-step figure, median over the steps after the warm-up) ...
        records = [json.loads(line) for line in
                   (out / f"{model}-olmo-exp" / "run" / "metrics.jsonl").read_text().splitlines()]
        timed = sorted(r["throughput/device/TPS"] for r in records
                       if r["step"] > 1 and "throughput/device/TPS" in r)
        assert len(timed) == exp["steps_timed"]
        assert exp["tokens_per_s"] == (timed[(len(timed) - 1) // 2] + timed[len(timed) // 2]) / 2
        # ... and the raw loop's step times in its log (printed to the ms): 4 x 64 tokens a step.
        log = (out / f"{model}-raw" / "log.txt").read_text()
        times = [float(t) for t in re.findall(r"^raw step \d+: ([\d.]+) s", log, re.M)][1:]
        assert len(times) == 3 - 1 and raw["steps_timed"] == 2  # --steps 3, the first is warm-up
        median = sum(times) / 2
        assert 256 / (median + 0.0005) <= raw["tokens_per_s"] <= 256 / max(median - 0.0005, 1e-9)
    uniform = arms[("uniform", "raw")]
    assert arms[("gqa", "raw")]["n_params"] < uniform["n_params"]  # fewer K/V projections
    assert arms[("lws", "raw")]["flops_per_token"] != uniform["flops_per_token"]
    assert all(v is not None for v in results["ratios"].values()), results["ratios"]
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


# Fixed arms for the benchmark's own arithmetic: (tokens/s, FLOPs per token), or an arm that failed.
FIXED_ARMS = {("uniform", "olmo-exp"): (20_000, 6_000_000_000), ("uniform", "raw"): (25_000, 6_000_000_000),
              ("lws", "olmo-exp"): (15_000, 7_000_000_000), ("lws", "raw"): (20_000, 7_000_000_000),
              ("gqa", "olmo-exp"): (22_000, 5_500_000_000), ("gqa", "raw"): None}


def _bench_with_fixed_arms(monkeypatch: pytest.MonkeyPatch, out: Path, device: str,
                           *args: str) -> dict:
    """``python -m olmo_exp.bench.gpu ARGS`` with the arms' measurements given (FIXED_ARMS)."""
    import olmo_exp.data.prep

    def arm(impl: str):
        def run(overrides: list[str], steps: int, warmup: int, arm_dir: Path, timeout_s: float) -> dict:
            model = ("lws" if "model=openelm_1_1b" in overrides else
                     "gqa" if "model.n_kv_heads=4" in overrides else "uniform")
            (arm_dir / "log.txt").write_text("")
            fixed = FIXED_ARMS[(model, impl)]
            if fixed is None:
                return {"wall_s": 9.0, "max_rss_gib": 1.0, "error": "stopped at its time bound"}
            return {"wall_s": 9.0, "max_rss_gib": 1.0, "tokens_per_s": fixed[0], "steps_timed": 11,
                    "flops_per_token": fixed[1], "n_params": 1, "peak_gpu_gib": None}
        return run

    monkeypatch.setattr(olmo_exp.data.prep, "prepare", lambda data: None)
    # the arms are given: the refusal to train 1B models on a machine without a GPU doesn't apply
    monkeypatch.setattr(benchmark_gpu, "no_gpu_defaults", lambda models, overrides: None)
    monkeypatch.setattr(benchmark_gpu, "olmo_exp_arm", arm("olmo-exp"))
    monkeypatch.setattr(benchmark_gpu, "raw_arm", arm("raw"))
    monkeypatch.setattr(benchmark_gpu, "device_name", lambda: device)
    benchmark_gpu.main(["--out", str(out), *args])
    return json.loads((out / "results.json").read_text())


def test_mfu_and_ratios_of_fixed_measurements(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """MFU and the ratios against numbers worked out by hand (peak 1000 TFLOP/s = 1e15 FLOP/s)."""
    results = _bench_with_fixed_arms(monkeypatch, tmp_path / "a", "CPU (2 cores)",
                                     "--peak-tflops", "1000")
    assert results["peak_flops"] == 1e15
    mfu = {(a["model"], a["impl"]): a.get("mfu_percent") for a in results["arms"]}
    # e.g. uniform olmo-exp: 20,000 tokens/s x 6e9 FLOPs/token = 1.2e14 FLOP/s = 12% of 1e15.
    assert mfu == {("uniform", "olmo-exp"): 12.0, ("uniform", "raw"): 15.0,
                   ("lws", "olmo-exp"): 10.5, ("lws", "raw"): 14.0,
                   ("gqa", "olmo-exp"): 12.1, ("gqa", "raw"): None}
    assert results["ratios"] == {
        "olmo-exp lws/uniform mfu_percent": 0.875, "olmo-exp lws/uniform tokens_per_s": 0.75,
        "olmo-exp gqa/uniform mfu_percent": 1.008, "olmo-exp gqa/uniform tokens_per_s": 1.1,
        "raw lws/uniform mfu_percent": 0.933, "raw lws/uniform tokens_per_s": 0.8,
        "raw gqa/uniform mfu_percent": None, "raw gqa/uniform tokens_per_s": None,
        "uniform olmo-exp/raw tokens_per_s": 0.8, "lws olmo-exp/raw tokens_per_s": 0.75,
        "gqa olmo-exp/raw tokens_per_s": None,
    }
    # The peak by device name (an H200's dense bf16 peak, 989.5 TFLOP/s): 1.2e14 / 9.895e14.
    results = _bench_with_fixed_arms(monkeypatch, tmp_path / "b", "1 x NVIDIA H200")
    assert results["peak_flops"] == 989.5e12
    assert [a.get("mfu_percent") for a in results["arms"]] == [12.13, 15.16, 10.61, 14.15, 12.23, None]
    # A CPU without --peak-tflops: no MFU, so no MFU ratio; tokens/s ratios still.
    results = _bench_with_fixed_arms(monkeypatch, tmp_path / "c", "CPU (2 cores)")
    assert results["peak_flops"] is None
    assert [a.get("mfu_percent") for a in results["arms"]] == [None] * 6
    assert results["ratios"]["raw lws/uniform mfu_percent"] is None
    assert results["ratios"]["raw lws/uniform tokens_per_s"] == 0.8
