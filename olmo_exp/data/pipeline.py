"""One preparation pass (:class:`Pipeline`): stream the source, clean in worker processes, train the
BPE if asked, tokenize in threads, and write shards with ``progress.json`` after each, so that an
interrupted pass resumes from its last complete shard. :func:`olmo_exp.data.prep.prepare` decides
whether a pass is needed and holds the lock."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from olmo_exp.base.errors import DataError
from olmo_exp.base.files import atomic_path, sha256_file, write_atomic, write_json_atomic
from olmo_exp.config.data import DataConfig, DataSource
from olmo_exp.config.topology import available_cpus
from olmo_exp.data.manifest import MANIFEST, SPLITS
from olmo_exp.data.shards import PROGRESS, Shards
from olmo_exp.data.sources import (
    Record,
    clean_records,
    is_local_dataset,
    is_validation,
    iter_records,
    needs_cleaning,
    source_identity,
    source_name,
)
from olmo_exp.data.tokenizer import (
    BatchEncoder,
    TokenizerInfo,
    train_bpe,
)
from olmo_exp.data.workers import T, batched, ordered_map

log = logging.getLogger(__name__)


SPILL = (
    "work/articles.jsonl"  # BPE only: cleaned articles from the training pass, re-read for tokens
)


CLEAN_BATCH = 8  # articles per task sent to a cleaning worker


ENCODE_BATCH_CHARS = 4 << 20  # text per tokenizer batch call


class Pipeline:
    def __init__(
        self,
        cfg: DataConfig,
        info: TokenizerInfo,
        root: Path,
        keyed: dict[str, Any],
        tok_source: Path | None,
    ):
        self.cfg, self.info, self.root, self.keyed = cfg, info, root, keyed
        self.tok_source = tok_source
        self.workers = cfg.num_workers or available_cpus()
        self.np_dtype = np.dtype(info.dtype)
        self._postfix = ""
        self.shard_tokens = max(1, int(cfg.shard_size_mb * (1 << 20)) // self.np_dtype.itemsize)

    # ------------------------------------------------------------------ sources

    def _articles(self, skip: int) -> Iterator[Record]:
        """Cleaned articles after the first ``skip`` (which are neither cleaned nor tokenized)."""
        spill = self.root / SPILL
        if spill.is_file():
            with open(spill) as f:
                yield from (json.loads(line) for line in itertools.islice(f, skip, None))
            return
        raw: Iterator[Record] = iter_records(self.cfg, skip, on_total=self._set_total)
        if self.cfg.max_articles is not None:
            raw = itertools.islice(raw, max(0, self.cfg.max_articles - skip))
        if needs_cleaning(self.cfg):
            for batch in ordered_map(clean_records, batched(raw, CLEAN_BATCH), self.workers):
                yield from batch
        else:
            yield from raw

    def _total(self) -> int | None:
        return self.cfg.max_articles

    def _set_total(self, n: int) -> None:
        """The source learned its size (hf metadata): give the bar an ETA."""
        bar = getattr(self, "_bar", None)
        if bar is not None and self.cfg.max_articles is None:
            bar.total = n
            bar.refresh()

    # ------------------------------------------------------------------ tokenizer

    def _tokenizer_file(self) -> Path:
        path = self.root / "tokenizer.json"
        if path.is_file():
            return path
        if self.cfg.tokenizer == "bpe":
            self._train_bpe(path)
        else:
            assert self.tok_source is not None
            with atomic_path(path) as tmp:
                shutil.copyfile(self.tok_source, tmp)
        return path

    def _train_bpe(self, out: Path) -> None:
        """Pass 1: clean every article once, spill it to disk (for pass 2), train on the train split."""
        spill = self.root / SPILL
        spill.parent.mkdir(parents=True, exist_ok=True)
        tmp = spill.with_name(spill.name + ".tmp")
        t0 = time.perf_counter()
        with open(tmp, "w") as f:

            def train_texts() -> Iterator[str]:
                for a in self._progress(self._articles(0), "clean+train BPE", 0):
                    f.write(json.dumps(a, ensure_ascii=False) + "\n")
                    if a["text"] and not is_validation(a["id"], self.cfg.validation_fraction):
                        yield a["text"]

            train_bpe(train_texts(), self.cfg.bpe_vocab_size, out.with_name(out.name + ".new"))
        os.replace(tmp, spill)  # the spill is complete only once renamed
        os.replace(out.with_name(out.name + ".new"), out)
        log.info(
            "trained BPE (vocab %d) in %.1fs", self.cfg.bpe_vocab_size, time.perf_counter() - t0
        )

    # ------------------------------------------------------------------ main pass

    def _progress(self, it: Iterable[T], desc: str, initial: int) -> Iterator[T]:
        """A tqdm bar (articles/s, tok/s, ETA when the total is known) on a terminal; in batch jobs
        (no terminal) the same numbers as a log line every 30 s."""
        from tqdm.auto import tqdm

        total = self._total()
        tty = sys.stderr.isatty()
        bar = tqdm(
            it,
            desc=desc,
            unit="art",
            total=total,
            initial=initial,
            disable=not tty,
            dynamic_ncols=True,
        )
        self._bar = bar
        if tty:
            yield from bar
            return
        t0 = last = time.perf_counter()
        for n, item in enumerate(bar, start=1):
            yield item
            now = time.perf_counter()
            if now - last >= 30:
                last = now
                rate = n / (now - t0)
                left = (bar.total or 0) - initial - n
                eta = f", ETA {left / rate / 60:.1f} min" if bar.total else ""
                log.info(
                    "%s: %d articles (%.1f/s%s) %s", desc, initial + n, rate, eta, self._postfix
                )

    def _load_state(self) -> dict[str, Any]:
        path = self.root / PROGRESS
        fresh = {"key": self.keyed, "articles": 0, "empty_articles": 0,
                 "splits": {s: [] for s in SPLITS}}
        if not path.is_file():
            return fresh
        try:
            state = json.loads(path.read_text())
        except ValueError:
            return fresh
        if state.get("key") != self.keyed or not (self.root / "tokenizer.json").is_file():
            return fresh
        # Resume only from shards that are really there, whole.
        for split in SPLITS:
            for s in state["splits"][split]:
                p = self.root / s["path"]
                if not p.is_file() or p.stat().st_size != s["bytes"]:
                    return fresh
        log.info("resuming data prep in %s after %d articles", self.root, state["articles"])
        return state

    def run(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tok_file = self._tokenizer_file()
        encoder = BatchEncoder(self.cfg.tokenizer, tok_file, self.workers)
        state = self._load_state()
        shards = Shards(self, state)
        n_tokens = 0
        articles = self._progress(self._articles(state["articles"]), "tokenize", state["articles"])
        try:
            # One batch of lookahead: batch k encodes (threads) while k+1 is read and k-1 written.
            previous: tuple[list[Record], Callable[[], list[np.ndarray]]] | None = None
            for batch in self._text_batches(articles):
                job = encoder.submit([a["text"] for a in batch if a["text"]])
                if previous is not None:
                    n_tokens += self._consume(previous[0], previous[1](), shards)
                previous = (batch, job)
                rate = n_tokens / max(time.perf_counter() - t0, 1e-9)
                self._postfix = f"{rate:,.0f} tok/s"
                self._bar.set_postfix_str(self._postfix, refresh=False)
            if previous is not None:
                n_tokens += self._consume(previous[0], previous[1](), shards)
        finally:
            encoder.close()
        shards.flush()
        self._write_manifest(encoder.backend, tok_file)
        seconds = time.perf_counter() - t0
        log.info(
            "prepared %s: %d articles, %d new tokens in %.1fs (%.0f tok/s, %s)",
            self.root, state["articles"], n_tokens, seconds, n_tokens / max(seconds, 1e-9), encoder.backend,
        )  # fmt: skip

    def _consume(self, batch: list[Record], encoded: list[np.ndarray], shards: Shards) -> int:
        """Put one encoded batch of articles into the shard buffers; returns the tokens added."""
        frac = self.cfg.validation_fraction
        eos = np.array([self.info.eos_token_id], dtype=np.uint32)
        docs = [a for a in batch if a["text"]]
        splits = ["validation" if is_validation(a["id"], frac) else "train" for a in docs]
        # One flat array per split for the whole batch (fast), cut at document ends below.
        flat: dict[str, np.ndarray] = {}
        lengths: dict[str, Iterator[int]] = {}
        for split in SPLITS:
            ids = [e for e, s in zip(encoded, splits, strict=True) if s == split]
            parts = [p for e in ids for p in (e, eos)]
            arr = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
            if arr.size and int(arr.max()) >= self.info.vocab_size:
                raise DataError(
                    f"data.tokenizer={self.cfg.tokenizer!r} produced id {int(arr.max())} >= its vocab size "
                    f"{self.info.vocab_size}: the tokenizer file does not match its declared vocab"
                )
            flat[split] = arr.astype(self.np_dtype, copy=False)
            lengths[split] = iter([len(e) + 1 for e in ids])
        cut = dict.fromkeys(SPLITS, 0)  # tokens of flat[split] already handed to shards
        end = dict.fromkeys(SPLITS, 0)  # tokens of flat[split] of the articles consumed so far
        split_of = iter(splits)
        total = 0
        for article in batch:
            if article["text"]:
                split = next(split_of)
                n = next(lengths[split])
                if shards.would_overflow(split, n):
                    for s in SPLITS:  # shards end at article boundaries, under shard_size_mb
                        shards.add(s, flat[s][cut[s] : end[s]])
                        cut[s] = end[s]
                    shards.flush()
                end[split] += n
                shards.count(split, n)
                total += n
            else:
                shards.empty += 1  # no text (after cleaning): skipped, counted in the manifest
            shards.consumed += 1
        for s in SPLITS:
            shards.add(s, flat[s][cut[s] : end[s]])
        return total

    def _text_batches(self, articles: Iterable[Record]) -> Iterator[list[Record]]:
        batch: list[Record] = []
        chars = 0
        for a in articles:
            batch.append(a)
            chars += len(a["text"])
            if chars >= ENCODE_BATCH_CHARS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    def _write_shard(
        self, split: str, index: int, arrays: list[np.ndarray], documents: int
    ) -> dict[str, Any]:
        rel = f"{split}/part-{index:05d}.bin"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        # headerless, like np.memmap writes; the dtype is in the manifest
        write_atomic(path, data.tobytes(), fsync=True)
        return {
            "path": rel,
            "documents": documents,
            "tokens": int(data.size),
            "bytes": int(data.nbytes),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        }

    def _write_manifest(self, backend: str, tok_file: Path) -> None:
        state = json.loads((self.root / PROGRESS).read_text())
        splits = {
            split: {
                "documents": sum(s["documents"] for s in state["splits"][split]),
                "tokens": sum(s["tokens"] for s in state["splits"][split]),
                "shards": state["splits"][split],
            }
            for split in SPLITS
        }
        source = source_identity(self.cfg)
        if source_name(self.cfg) == DataSource.hf.value:
            source["revision"] = _hf_revision(self.cfg)
        manifest = {
            "format": FORMAT_VERSION,
            "key": self.root.name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "articles": state["articles"],
            # Records without text (empty/null text column, pages that clean to nothing): skipped.
            "empty_articles": state.get("empty_articles", 0),
            "config": config_dict(self.cfg),
            "keyed_on": self.keyed,
            "tokenizer": {
                "name": self.info.name,
                "identity": self.info.identity,
                "file": tok_file.name,
                "sha256": sha256_file(tok_file),
                "encoder": backend,
            },
            "vocab_size": self.info.vocab_size,
            "eos_token_id": self.info.eos_token_id,
            "pad_token_id": self.info.pad_token_id,
            "dtype": self.info.dtype,
            "eos_after_each_document": True,
            "split": {
                "by": "sha256(article id)",
                "validation_fraction": self.cfg.validation_fraction,
            },
            "splits": splits,
        }
        write_json_atomic(self.root / MANIFEST, manifest)  # last: marks the data dir complete
        (self.root / PROGRESS).unlink(missing_ok=True)
        shutil.rmtree(self.root / "work", ignore_errors=True)
        for stale in self.root.rglob(".*.tmp*"):  # half-written files of a killed earlier attempt
            stale.unlink(missing_ok=True)


def _hf_revision(cfg: DataConfig) -> str | None:
    if is_local_dataset(cfg):
        return None  # a local copy has no hub revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(cfg.hf_dataset).sha
    except Exception:  # noqa: BLE001 — the revision is informative; prep already succeeded
        return None


FORMAT_VERSION = 1  # bump when the on-disk layout changes


def config_dict(cfg: DataConfig) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in dataclasses.asdict(cfg).items()}
