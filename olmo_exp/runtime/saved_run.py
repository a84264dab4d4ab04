"""A finished (or stopped) run, read back from its directory: the config its latest attempt ran
with (``.hydra/``), its checkpoints, its data, and its model with a checkpoint's weights, unsharded
on one process (olmo-core's distributed checkpoints reshard on load: a checkpoint written by N FSDP
ranks loads the same as one written by a single process)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.build.summary import SUMMARY_FILE
from olmo_exp.config.run import RunConfig
from olmo_exp.data.manifest import Manifest
from olmo_exp.runtime.run import latest_attempt_config

if TYPE_CHECKING:
    import torch
    from olmo_core.nn.transformer import Transformer, TransformerConfig

# What evaluate/generate may change: how the checkpoint is used, never what it is (model, data).
OVERRIDABLE = ("train.eval_tokens", "train.micro_batch_size", "eval.", "generate.")


@dataclass
class SavedRun:
    run_dir: Path
    config: RunConfig
    step: int
    checkpoint: Path
    """``checkpoints/stepN``: olmo-core's ``model_and_optim/`` (DCP) and ``train/``."""
    summary: dict[str, Any]
    """``model_summary.json``: per-layer geometry, params, FLOPs, KV bytes, the data it read."""

    @property
    def manifest(self) -> Manifest:
        """The prepared data the run trained and validated on (its tokenizer included)."""
        recorded = self.summary.get("data", {}).get("dir")
        if recorded and Path(recorded, "manifest.json").exists():
            return Manifest.load(recorded)
        from olmo_exp.data.prep import data_dir

        return Manifest.load(data_dir(self.config.data))

    def model_config(self) -> TransformerConfig:
        vocab = self.config.model.padded_vocab_size(self.manifest.vocab_size)
        return self.config.model.build_config(vocab)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def final_metric(self, name: str) -> float | None:
        """The value of ``name`` logged last at or before this checkpoint's step."""
        found = [r[name] for r in self.metrics() if name in r and r.get("step", 0) <= self.step]
        return found[-1] if found else None


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of the run's complete checkpoints (those with model weights), ascending."""
    steps = []
    for path in (run_dir / "checkpoints").glob("step*"):
        if path.name[4:].isdigit() and (path / "model_and_optim" / ".metadata").exists():
            steps.append(int(path.name[4:]))
    return sorted(steps)


def open_run(run_dir: str | Path, step: int | None = None,
             overrides: list[str] | None = None) -> SavedRun:
    """The run in ``run_dir`` at checkpoint ``step`` (its latest by default), with ``overrides``
    (``key=value``, only keys in :data:`OVERRIDABLE`) applied to its config."""
    run_dir = Path(run_dir).resolve()
    config_path = latest_attempt_config(run_dir)
    if config_path is None:
        raise ConfigError("RUN_DIR", str(run_dir),
                          "must be a run directory (it has no .hydra/config.yaml)")
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ConfigError("RUN_DIR", str(run_dir),
                          "has no checkpoint (checkpoints/stepN/model_and_optim); train it first")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ConfigError("--step", step, f"must be one of the run's checkpoints: {steps}")
    node = OmegaConf.load(config_path)
    for override in overrides or []:
        key, sep, value = override.partition("=")
        if not sep or not key.startswith(OVERRIDABLE):
            raise ConfigError("override", override,
                              f"must be key=value with a key under {', '.join(OVERRIDABLE)} "
                              "(the model and the data are the run's own)")
    node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(overrides or [])))  # YAML values
    config = RunConfig.from_dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return SavedRun(run_dir=run_dir, config=config, step=step,
                    checkpoint=run_dir / "checkpoints" / f"step{step}", summary=summary)


def load_model(run: SavedRun, device: torch.device | str = "cpu") -> Transformer:
    """The run's olmo-core model with the checkpoint's weights, unsharded, fp32, in eval mode."""
    from olmo_core.distributed.checkpoint import load_model_and_optim_state

    model = run.model_config().build(init_device="cpu")
    # Reads the DCP shards of however many ranks wrote them and reassembles every full tensor.
    load_model_and_optim_state(run.checkpoint / "model_and_optim", model)
    model.to(device)
    model.eval()
    return model
