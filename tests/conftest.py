"""Shared helpers and fixtures: compose a config as run.py does, run the real CLI in subprocesses,
and one prepared sample (the default data) per test session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from omegaconf import DictConfig, OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import CONF_DIR
from olmo_exp.cli.registry import register
from olmo_exp.config.topology import Host, Topology

if TYPE_CHECKING:
    from olmo_exp.config.data import DataConfig
    from olmo_exp.config.run import RunConfig
    from olmo_exp.data.manifest import Manifest

REPO = Path(__file__).resolve().parents[1]
CONF = CONF_DIR

# A developer's own cluster profile (~/.config/olmo-exp/cluster/default.yaml) must not change what
# the tests compose; tests that want one point OLMO_EXP_CONFIG_DIR at their own directory.
os.environ["OLMO_EXP_CONFIG_DIR"] = "/nonexistent/olmo-exp-tests"

register()

# Config checks against a fixed host (nothing launched, no GPU), whatever machine runs the tests.
CPU_HOST = Host(launched=None, gpus=0)

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


# Tests leave nothing in the working tree: every run dir, sweep dir and data cache goes under
# pytest's tmp_path. Checked over the whole session: a file or directory (an empty one too, which
# git does not show) that appeared in the checkout fails the run, named.
_CACHES = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv"}


def left_in_tree() -> set[str]:
    """Every path in the checkout but caches (and the installed package's metadata)."""
    found = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _CACHES and not d.endswith(".egg-info")]
        rel = Path(root).relative_to(REPO)
        found.update(str(rel / name) for name in [*dirs, *files])
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = left_in_tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = left_in_tree() - session.config.stash.get(_BEFORE, set())
    if left:
        print(f"\nthe tests left files in the working tree (write under tmp_path): {sorted(left)}",
              file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[set]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def compose(overrides: Sequence[str] = (), *, hydra: bool = False,
            search_dir: Path | None = None) -> DictConfig:
    """The config run.py composes from these overrides (``hydra``: with its ``hydra.*`` node;
    ``search_dir``: one more config directory on Hydra's search path)."""
    from olmo_exp.config.compose import compose as compose_config

    extra = [f"hydra.searchpath=[file://{search_dir}]"] if search_dir is not None else []
    return compose_config([*extra, *overrides], return_hydra_config=hydra)


def compose_run(*overrides: str, search_dir: Path | None = None) -> RunConfig:
    """:func:`compose`, typed: the RunConfig run.py executes (not validated yet)."""
    from olmo_exp.config.run import RunConfig

    config = OmegaConf.to_object(compose(overrides, search_dir=search_dir))
    assert isinstance(config, RunConfig)
    return config


def assert_one_line_error(overrides: Sequence[str], key: str) -> None:
    """The composed config fails validation with one line that starts with ``key=value``."""
    config = compose_run(*overrides)
    from olmo_exp.data.check import check_run

    with pytest.raises(ConfigError) as err:
        check_run(config, CPU_HOST)
    assert err.value.key == key
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{key}=")


def cpu_world(nproc: int = 1) -> Topology:
    return Topology(nproc_per_node=nproc, nodes=1, world_size=nproc, gpus=0, launched=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a finished run's JSON-lines file; unlike olmo_exp.base.files.read_jsonl, a torn
    line fails the test instead of being skipped."""
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


@pytest.fixture(scope="session")
def sample_cfg(data_dir: Path) -> DataConfig:
    """The default data config (data=wiki_sample) in ``data_dir``, as run.py composes it."""
    return compose_run(f"data.output_dir={data_dir}").data


@pytest.fixture(scope="session")
def sample(sample_cfg: DataConfig) -> Manifest:
    """The default data set (sample dump, trained 8k BPE), prepared once per session: the cache
    run.py finds in ``data_dir``, so no test prepares it a second time."""
    from olmo_exp.data.prep import prepare

    return prepare(sample_cfg)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = False,
        timeout: int = 900) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` as a user types it, from ``cwd``; ``check``: fail on a non-zero exit."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"run.py {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture
def run_cli(data_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(*overrides, run_dir=..., check=True)``: :func:`cli` on the session's data dir."""

    def run(*overrides: str, run_dir: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        args = [f"data.output_dir={data_dir}", *overrides]
        if run_dir is not None and not any(o.startswith("hydra.run.dir=") for o in overrides):
            args.append(f"hydra.run.dir={run_dir}")
        return cli(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1", **(env or {})},
                   check=check, timeout=timeout)

    return run


def report_figure(sweep: Path) -> Any:
    """report.png's matplotlib figure, kept while ``write_report`` draws and saves it (as
    ``python -m olmo_exp.sweep.report DIR`` does), so tests read artists, not pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from olmo_exp.sweep.report import write_report

    saved: list[Figure] = []
    original = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        saved.append(fig)
        original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", keep)
        write_report(sweep)
    return saved[-1]
