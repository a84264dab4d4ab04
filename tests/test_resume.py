"""Resuming a run directory: what may change between attempts (train settings, listed in one
line), what may not (the model, the data and its order), and every attempt's config kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose, compose_run
from omegaconf import OmegaConf

from olmo_exp.runtime.run import Run, RunDirError, latest_attempt_config


def attempt(run_dir: Path, *overrides: str) -> Run:
    """The run object for these overrides in ``run_dir``, as run.py builds it (Hydra's composed
    config kept for .hydra/)."""
    return Run(config=compose_run(*overrides), run_dir=run_dir,
               hydra_files={"config.yaml": compose(overrides),
                            "overrides.yaml": OmegaConf.create(list(overrides))},
               fresh_dir=False)


@pytest.fixture
def resumable(tmp_path: Path) -> Path:
    """A run dir whose first attempt (defaults) wrote .hydra/ and a checkpoint."""
    run_dir = tmp_path / "run"
    attempt(run_dir)._write_hydra_files()
    (run_dir / "checkpoints" / "step50").mkdir(parents=True)
    return run_dir


def test_changed_train_settings_are_listed_and_every_config_kept(
        resumable: Path, caplog: pytest.LogCaptureFixture) -> None:
    second = attempt(resumable, "train.lr=1e-3", "train.max_steps=200")
    with caplog.at_level("INFO", logger="olmo_exp.runtime.run"):
        second.check_run_dir()
    lines = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert lines == ["resuming with train settings changed since the last attempt: "
                     "train.max_steps: 100 -> 200, train.lr: 0.003 -> 0.001"]
    second._write_hydra_files()
    hydra = resumable / ".hydra"
    assert OmegaConf.load(hydra / "config.yaml").train.lr == 3e-3  # the first attempt's, kept
    assert OmegaConf.load(hydra / "attempt-2" / "config.yaml").train.lr == 1e-3
    assert latest_attempt_config(resumable) == hydra / "attempt-2" / "config.yaml"
    # the third attempt compares with the second: nothing changed, nothing said
    caplog.clear()
    with caplog.at_level("INFO", logger="olmo_exp.runtime.run"):
        attempt(resumable, "train.lr=1e-3", "train.max_steps=200").check_run_dir()
    assert not [r for r in caplog.records if "changed" in r.getMessage()]
    attempt(resumable, "train.lr=1e-3")._write_hydra_files()
    assert (hydra / "attempt-3" / "config.yaml").exists()


@pytest.mark.parametrize("override,key", [
    ("train.seed=7", "train.seed"),
    ("train.global_batch_size=16", "train.global_batch_size"),
    ("data.sequence_length=128", "data.sequence_length"),
    ("data.max_articles=10", "data.max_articles"),
    ("model.n_layers=2", "model"),
    ("train.init_from=/another/run", "train.init_from"),  # the weights the checkpoints grew from
])
def test_what_changes_the_data_order_or_the_model_is_refused(resumable: Path, override: str,
                                                            key: str) -> None:
    with pytest.raises(RunDirError) as err:
        attempt(resumable, override).check_run_dir()
    message = str(err.value)
    assert "\n" not in message and f"different run ({key}:" in message
