"""Evaluation without a trainer: the run's own evaluators (:mod:`olmo_exp.build.eval`: the same
validation sequences, masking and bits per byte; the same capped downstream tasks) fed by any
model that maps token ids to logits, an olmo-core checkpoint or a transformers export alike.
The loop is olmo-core's evaluator callback's, one process: labels from ``get_labels``, per-token
CE (``reduction="none"``, ignore index -100), then each evaluator's ``update_metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from olmo_core.eval import Evaluator

from olmo_exp.build.eval import LABEL, CappedDownstreamEvaluator, ValidationEvaluator
from olmo_exp.data.tokenizer import TextTokenizer
from olmo_exp.runtime.saved_run import SavedRun

Logits = Callable[[torch.Tensor], torch.Tensor]
"""input ids (batch, length) -> logits (batch, length, vocab)."""

VALIDATION_LOSS = f"eval/lm/{LABEL}/CE loss"
VALIDATION_BPB = f"eval/lm/{LABEL}/BPB"


def olmo_logits(model: torch.nn.Module) -> Logits:
    return lambda ids: model(ids)


def hf_logits(model: torch.nn.Module) -> Logits:
    return lambda ids: model(input_ids=ids).logits


def validation_evaluator(run: SavedRun, device: torch.device) -> ValidationEvaluator:
    """The run's validation set: the first ``train.eval_tokens // data.sequence_length``
    sequences of its validation split, ``train.micro_batch_size`` per forward pass."""
    from olmo_core.data import DataCollator

    manifest, seq_len, train = run.manifest, run.config.data.sequence_length, run.config.train
    dataset = manifest.dataset_config(LABEL, sequence_length=seq_len,
                                      work_dir=str(run.run_dir / "dataset-work")).build()
    dataset.prepare()
    return ValidationEvaluator(
        dataset=dataset, num_sequences=manifest.eval_sequences(train.eval_tokens, seq_len),
        rank_batch_size=train.micro_batch_size,
        collator=DataCollator(pad_token_id=manifest.pad_token_id),
        tokenizer=TextTokenizer(manifest.tokenizer_path), device=device)


def downstream_evaluators(run: SavedRun, device: torch.device) -> list[Evaluator]:
    """One capped evaluator per ``eval.tasks`` entry, batched as the run's train module does."""
    from olmo_core.train.train_module import EvalBatchSpec
    from olmo_eval import HFTokenizer

    manifest, cfg = run.manifest, run.config
    tokenizer = HFTokenizer(str(manifest.tokenizer_path), pad_token_id=manifest.pad_token_id,
                            eos_token_id=manifest.eos_token_id)
    spec = EvalBatchSpec(cfg.train.micro_batch_size * cfg.data.sequence_length,
                         max_sequence_length=cfg.data.sequence_length)
    return [CappedDownstreamEvaluator(
        name="downstream", task=task, batch_spec=spec, tokenizer=tokenizer, device=device,
        max_examples=cfg.eval.max_examples, context=cfg.model.max_sequence_length)
        for task in sorted(cfg.eval.tasks)]


@torch.no_grad()
def run_evaluator(evaluator: Evaluator, logits_of: Logits, device: torch.device) -> dict[str, float]:
    """``eval/<name>/<metric>`` -> value, as the in-loop evaluator callback records them."""
    from olmo_core.data.utils import get_labels
    from olmo_core.utils import move_to_device

    evaluator.reset_metrics()
    for batch in evaluator:
        batch = move_to_device(batch, device)
        labels = get_labels(batch)
        input_ids = batch.pop("input_ids")  # as the train module's eval_batch does
        logits = logits_of(input_ids).float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                             ignore_index=-100, reduction="none").view(labels.shape)
        evaluator.update_metrics(batch, ce, logits)
    return {f"eval/{evaluator.name}/{k}": float(v) for k, v in evaluator.compute_metrics().items()}


def evaluate(run: SavedRun, logits_of: Logits, *, device: torch.device | str = "cpu",
             tasks: bool = True) -> dict[str, Any]:
    """Validation loss, perplexity and BPB (+ ``eval.tasks`` when ``tasks``) of one model."""
    device = torch.device(device)
    metrics = run_evaluator(validation_evaluator(run, device), logits_of, device)
    if tasks and run.config.eval.tasks:
        for evaluator in downstream_evaluators(run, device):
            metrics.update(run_evaluator(evaluator, logits_of, device))
    return metrics
