"""One sweep job as the report sees it: its row (report.csv, report.md's job table) and what the
arm table and the plots read besides. Read by :mod:`olmo_exp.sweep.report`; :mod:`arm_report` and
:mod:`plots` import it from here, below both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobRow:
    job: int
    overrides: str
    """The overrides that differ between the sweep's jobs (the common ones are in report.md)."""
    status: str
    """finished | failed | diverged | running | not started | dry run (see job_status)"""
    error: str = ""
    step: int | None = None
    params: int | None = None
    non_embedding_params: int | None = None
    flops_per_token: int | None = None
    train_flops: int | None = None
    """flops_per_token x tokens trained (last step x global batch x sequence length): the
    compute a ladder's fit uses (:func:`olmo_exp.sweep.scaling_report.job_compute`)."""
    kv_cache_bytes_per_token: int | None = None
    """bf16, all layers (model_summary.json's kv_cache_bytes_per_token_bf16)"""
    kv_cache_bytes_per_sequence: int | None = None
    """bf16, one sequence of the run's data.sequence_length tokens"""
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    final_val_ppl: float | None = None
    best_val_loss: float | None = None
    best_val_ppl: float | None = None
    tokens_per_s_device: float | None = None
    train_wall_s: float | None = None
    run_dir: str = ""


@dataclass
class JobData:
    row: JobRow
    all_overrides: list[str]
    curve_tokens_per_step: int | None
    metrics: list[dict[str, Any]]
    extra: dict[str, float] = field(default_factory=dict)
    """Other eval/... metrics of the last evaluation (bits per byte, downstream tasks, ...)."""
