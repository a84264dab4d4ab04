"""Token shards of one preparation pass: buffers per split written together at an article boundary,
with ``progress.json`` rewritten after each write so that a resumed pass knows where to start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from olmo_exp.base.files import write_json_atomic
from olmo_exp.data.manifest import SPLITS

if TYPE_CHECKING:
    from olmo_exp.data.pipeline import Pipeline


PROGRESS = "progress.json"



class Shards:
    """Buffers of tokens per split, written as shards together (at one article boundary), with
    ``progress.json`` updated after each write so a resumed prep knows where to start."""

    def __init__(self, prep: Pipeline, state: dict[str, Any]):
        self.prep, self.state = prep, state
        self.buffers: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.documents = dict.fromkeys(SPLITS, 0)
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.consumed = 0  # source articles in the buffers (incl. empty ones)
        self.empty = 0  # of which had no text

    def would_overflow(self, split: str, n: int) -> bool:
        return bool(self.tokens[split]) and self.tokens[split] + n > self.prep.shard_tokens

    def count(self, split: str, n: int) -> None:
        self.documents[split] += 1
        self.tokens[split] += n

    def add(self, split: str, tokens: np.ndarray) -> None:
        if tokens.size:
            self.buffers[split].append(tokens)

    def flush(self) -> None:
        for split in SPLITS:
            if self.tokens[split]:
                written = self.state["splits"][split]
                written.append(
                    self.prep._write_shard(
                        split, len(written), self.buffers[split], self.documents[split]
                    )
                )
            self.buffers[split].clear()
            self.documents[split] = self.tokens[split] = 0
        self.state["articles"] += self.consumed
        self.state["empty_articles"] = self.state.get("empty_articles", 0) + self.empty
        self.consumed = self.empty = 0
        write_json_atomic(self.prep.root / PROGRESS, self.state)
