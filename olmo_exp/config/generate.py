"""Text samples during training (``generate.*``), written to ``generations.jsonl`` by
:class:`olmo_exp.runtime.callbacks.GenerationCallback`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerateConfig:
    interval: int = 50
    """Steps between samples (0 = off); a sample is always taken at the end of training."""
    prompt: str = "The universe is"
    max_new_tokens: int = 50
    temperature: float = 0.0
    """0 = greedy."""
