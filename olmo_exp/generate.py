"""Text samples during training (``generate.*``), written to ``generations.jsonl``.

olmo-core's ``TransformerGenerationModule`` re-initialises the model it wraps and cannot live inside
an FSDP training process, so sampling is a short loop over the training model itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    interval: int = 50
    """Steps between samples (0 = off); a sample is always taken at the end of training."""
    prompt: str = "The universe is"
    max_new_tokens: int = 50
    temperature: float = 0.0
    """0 = greedy."""


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no grad, and under FSDP one all-gather for the whole sample instead of one per token."""
    import torch
    from torch.distributed.fsdp import FSDPModule

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
    import torch
    import torch.distributed as dist

    lockstep = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

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
