"""Every benchmark entry point runs as the README shows it: its defaults, shrunk to a tiny size by
its own flags and Hydra overrides (bench.gpu without a GPU: its configs checked, then one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# A tiny model and batch; train.micro_batch_size stays at its default (null).
TINY_MODEL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.head_dim=16",
              "data.sequence_length=64", "model.max_sequence_length=64",
              "train.global_batch_size=4"]


def bench(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
          expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"olmo_exp.bench.{name}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO),
                               **(env or {})})
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bench_train(data_dir: Path, tmp_path: Path) -> None:
    proc = bench("train", "--steps", "4", *TINY_MODEL, f"data.output_dir={data_dir}", cwd=tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tokens_per_step"] == 4 * 64
    assert result["olmo_exp_tokens_per_s"] > 0 and result["raw_olmo_core_tokens_per_s"] > 0
    assert result["ratio_olmo_exp_to_raw"] > 0


@pytest.mark.slow
def test_bench_dist(data_dir: Path, tmp_path: Path) -> None:
    bench("dist", "--warmup", "1", "--threads", "2", "--out", str(tmp_path / "out"), *TINY_MODEL,
          "train.max_steps=4", "train.micro_batch_size=2", f"data.output_dir={data_dir}",
          cwd=tmp_path)
    arms = json.loads((tmp_path / "out" / "results.json").read_text())["arms"]
    assert [(a["arm"], a["world_size"]) for a in arms] == [("dist=single", 1),
                                                           ("dist=fsdp dist.nproc_per_node=2", 2)]
    assert all(a["tokens_per_s"] > 0 for a in arms)


@pytest.mark.slow
def test_bench_data_in_a_fresh_clone(tmp_path: Path) -> None:
    """No ../shared/testdata, no tokenizer dir, hub offline: the eval extra's tokenizer is used."""
    pytest.importorskip("olmo_eval")
    env = {"HF_HUB_OFFLINE": "1", "OLMO_EXP_TOKENIZER_DIR": "", "HF_HUB_CACHE": str(tmp_path / "hf")}
    proc = bench("data", "--mb", "0.2", "--workers", "1", "--tokenizer-dir", str(tmp_path / "none"),
                 "--tiktoken-dir", str(tmp_path / "none"), cwd=tmp_path, env=env)
    assert "tokenizer: gpt_neox_olmo_dolma_v1_5" in proc.stdout
    assert "raw tokenizer (tokenizers, 1 threads)" in proc.stdout
    assert float(proc.stdout.split("prep / raw = ")[1].split()[0]) > 0


@pytest.mark.slow
def test_bench_cli(tmp_path: Path) -> None:
    proc = bench("cli", "--repeats", "1", cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if "x bare Hydra" in line]
    assert len(lines) == 4 and "rejected" in lines[-1]


@pytest.mark.slow
def test_bench_gpu_without_a_gpu_says_so_in_one_line(tmp_path: Path) -> None:
    proc = bench("gpu", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""}, expect=1)
    assert proc.stderr.startswith("bench.gpu: no GPU here (CPU")
    assert proc.stderr.count("\n") == 1 and "check out" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # nothing started, nothing written
