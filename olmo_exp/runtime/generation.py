"""Sampling during training: the greedy/temperature loop and the callback behind
``generations.jsonl``. Runs on every rank in lockstep (FSDP needs every forward on every rank);
rank 0 picks each token and broadcasts it, so ranks never disagree."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from olmo_core.distributed.utils import broadcast_object, get_rank, get_world_size, is_distributed
from olmo_core.train.callbacks import Callback
from torch.distributed.fsdp import FSDPModule

from olmo_exp.base.files import truncate_to_step
from olmo_exp.config.generate import GenerateConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no grad, and under FSDP one all-gather for the whole sample instead of one per token."""
    was_training = model.training
    fsdp_modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # FSDP2 has a setter but no getter for reshard-after-forward; save the exact per-group state so
    # that SHARD_GRAD_OP (no reshard) and olmo-core's unsharded head survive sampling unchanged.
    saved = []
    for m in fsdp_modules:
        state = m._get_fsdp_state()
        groups = [(g, g.post_forward_mesh_info) for g in state._fsdp_param_groups]
        saved.append((state, state._auto_reshard_after_forward, groups))
    model.eval()
    for m in fsdp_modules:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        # no_grad, not inference_mode: inference tensors (RoPE cache) would break later backward passes.
        with torch.no_grad():
            yield
    finally:
        for state, auto, groups in saved:
            state._auto_reshard_after_forward = auto
            for group, mesh_info in groups:
                group.post_forward_mesh_info = mesh_info
        for m in fsdp_modules:
            m.reshard()  # free the gathered weights; training gathers what it needs
        model.train(was_training)



def generate_ids(
    model: torch.nn.Module,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    eos_token_id: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> list[int]:
    """Greedy (or temperature) decoding, called on every rank; returns the same tokens on each.

    Under several ranks, rank 0 decides each token and broadcasts it: ranks computing their own
    argmax could pick different tokens (a bf16 tie on GPUs) or stop at different lengths (an EOS
    one rank sees), leaving them in different collectives, i.e. hung. Sampling draws from its own
    generator, leaving the training RNG state untouched.
    """
    lockstep = is_distributed() and get_world_size() > 1

    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    new: list[int] = []
    with _inference(model):
        for _ in range(max_new_tokens):
            logits = model(ids, logits_to_keep=1)[:, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            else:
                nxt = logits.argmax(dim=-1, keepdim=True)
            if lockstep:
                dist.broadcast(nxt, src=0)  # on the model's device: what the backend expects
            token = int(nxt.item())
            new.append(token)
            if token == eos_token_id:
                break
            ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
    return new



@dataclass
class GenerationCallback(Callback):
    """Samples text every ``generate.interval`` steps and at the end, into ``generations.jsonl``.

    Runs before the checkpointer (priority 2 > 1): a step's sample is on disk before its
    checkpoint, so a run resumed from any checkpoint finds the samples up to it and (after the
    records past it are dropped) writes each later one once.
    """

    priority: ClassVar[int] = 2
    config: GenerateConfig = field(default_factory=GenerateConfig)
    tokenizer: Any = None
    """Anything with ``encode(text) -> list[int]`` and ``decode(ids) -> str``."""
    eos_token_id: int | None = None
    path: Path = field(default_factory=lambda: Path("generations.jsonl"))
    _last_step: int = -1

    def pre_train(self) -> None:
        sampled_at_start = False
        if get_rank() == 0:
            start = self.trainer.global_step
            kept = truncate_to_step(self.path, start)
            sampled_at_start = bool(kept) and kept[-1].get("step") == start
        # Every rank must agree: sampling is collective under FSDP.
        if broadcast_object(sampled_at_start):
            self._last_step = self.trainer.global_step  # resumed after the end: don't sample again

    def post_step(self) -> None:
        if self.config.interval > 0 and self.step % self.config.interval == 0:
            self.sample()

    def post_train(self) -> None:
        # A canceled run (time-limit signal, SIGTERM) resumes later: no sample in its grace time.
        if self.step != self._last_step and not self.trainer.is_canceled:
            self.sample()

    def sample(self) -> str:
        self._last_step = self.step
        model = self.trainer.train_module.model
        new = generate_ids(
            model,
            self.tokenizer.encode(self.config.prompt),
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            eos_token_id=self.eos_token_id,
            seed=self.step,
            device=self.trainer.device,
        )
        if new and new[-1] == self.eos_token_id:
            new = new[:-1]
        text = self.tokenizer.decode(new)
        if get_rank() == 0:
            # One console line per sample: newlines (and other escapes) shown, not obeyed.
            log.info("[generation step %d] %s", self.step, one_line(self.config.prompt + text))
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": self.step, "prompt": self.config.prompt,
                                    "text": text}) + "\n")
        return text


_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def one_line(text: str) -> str:
    r"""``text`` on one console line: backslash, newline, CR and tab written as ``\\``, ``\n``,
    ``\r``, ``\t`` (other characters, accents included, as they are)."""
    return text.translate(_ESCAPES)
