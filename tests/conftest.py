"""Shared fixtures: run the real CLI in subprocesses, with one prepared data cache per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"

# A few real training steps on real text, small enough for 2 CPU cores.
TINY = [
    "data.sequence_length=64",
    "train.max_steps=6",
    "train.global_batch_size=4",
    "train.micro_batch_size=2",
    "train.warmup_steps=1",
    "train.log_interval=1",
    "train.checkpoint_interval=3",
    "train.eval_interval=0",
    "generate.interval=0",
    "generate.max_new_tokens=5",
]


# A test that uses one of these runs the real command line, real multi-process training, or needs
# the sample prepared/cleaned (test_data's session fixtures): it is `slow` whether or not it says
# so, keeping `pytest -m "not slow"` a fast lane (CI runs everything).
SLOW_FIXTURES = {"run_cli", "runs", "sample", "cleaned"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run_dir: Path) -> dict[int, float]:
    """step -> training CE loss, from a run's metrics.jsonl (one record per logged step)."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
    return {r["step"]: r["train/CE loss"] for r in records if "train/CE loss" in r}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session: the sample is prepared once, then reused."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def run_cli(data_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(*overrides, run_dir=..., check=True)``: ``python run.py`` as a user types it."""

    def run(*overrides: str, run_dir: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        args = [sys.executable, str(REPO / "run.py"), f"data.output_dir={data_dir}", *overrides]
        if run_dir is not None and not any(o.startswith("hydra.run.dir=") for o in overrides):
            args.append(f"hydra.run.dir={run_dir}")
        full_env = {**os.environ, "OMP_NUM_THREADS": "2", "HYDRA_FULL_ERROR": "1", **(env or {})}
        proc = subprocess.run(args, cwd=tmp_path, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"run.py {' '.join(overrides)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"
            )
        return proc

    return run
