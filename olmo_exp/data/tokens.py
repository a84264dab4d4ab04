"""``data=tokens``: existing olmo-core token files as a data set, used in place.

The files get the same interface as prepared data: a small ``manifest.json`` (in
``data.output_dir/tokens-<key>/``, key = hash of the file list, sizes, dtype and tokenizer) that
names them by absolute path, so that the run checks them (``Manifest.verify``) and trains on them
(``Manifest.dataset_config``) exactly as on its own shards. Nothing is copied.

Each file's ids are scanned once (:func:`scan_token_file`); the manifest records the size and
mtime each file had when it passed, and later starts trust that record while both still match
(the key already covers dtype, vocab and tokenizer), so no rank rereads MiB of every file at
every start. Without validation files the run has no validation loss (``Manifest.eval_sequences``
is 0 and the run says so).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from olmo_exp.base.errors import DataError
from olmo_exp.base.files import write_json_atomic
from olmo_exp.config.data import DataConfig, expand_files
from olmo_exp.data.manifest import MANIFEST, Manifest
from olmo_exp.data.tokenizer import TokenizerInfo, dtype_for_vocab, resolve_tokenizer_file

FORMAT = "tokens-1"
SCAN_TOKENS = 1 << 20
"""Token ids checked against the vocab: this many at the start and at the end of each file
(a wrong dtype or tokenizer shows at once; a whole scan of terabytes would not be worth it)."""
MISREAD_MIN_TOKENS = 64
"""Fewer scanned ids than this say nothing about the zero pattern of a misread dtype."""
MISREAD_GAP = 0.25
"""How much more often id 0 must sit at the high-part positions than at the others (and at least
half of them) to call a file one of wider ids: real token streams have no parity."""


def token_manifest(cfg: DataConfig, info: TokenizerInfo) -> Manifest:
    """Check the token files (present, whole multiples of the dtype, ids inside the tokenizer's
    vocab, not a wider dtype's bytes) and describe them in a manifest: one-line DataError otherwise."""
    dtype = cfg.token_dtype or dtype_for_vocab(info.vocab_size)
    if np.iinfo(dtype).max < info.vocab_size - 1:
        raise DataError(f"data.token_dtype={dtype} cannot hold the tokenizer's vocab "
                        f"{info.vocab_size}; use {dtype_for_vocab(info.vocab_size)} or larger")
    splits = {split: _shards(patterns, dtype) for split, patterns in
              (("train", cfg.token_files), ("validation", cfg.validation_token_files))}
    tokenizer_file = resolve_tokenizer_file(cfg)
    data: dict[str, Any] = {
        "format": FORMAT,
        "source": {"kind": "tokens"},
        "tokenizer": {"name": info.name, "identity": info.identity, "file": str(tokenizer_file)},
        "vocab_size": info.vocab_size,
        "eos_token_id": info.eos_token_id,
        "pad_token_id": info.pad_token_id,
        "dtype": dtype,
        "splits": splits,
    }
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cfg.output_dir).expanduser().resolve() / f"tokens-{key}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):  # ranks starting together: one scans, the rest trust it
        passed = _passed(root / MANIFEST)
        data["passed"] = {}
        for split in splits.values():
            for shard in split["shards"]:
                stat = Path(shard["path"]).stat()
                record = [stat.st_size, stat.st_mtime_ns]
                if passed.get(shard["path"]) != record:
                    scan_token_file(shard["path"], dtype, info.vocab_size, given=cfg.token_dtype)
                data["passed"][shard["path"]] = record
        if _read(root / MANIFEST) != {**data, "key": root.name}:
            write_json_atomic(root / MANIFEST, {**data, "key": root.name})
    return Manifest.load(root)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _passed(path: Path) -> dict[str, list[int]]:
    """The files a manifest records as scanned: path -> [size, mtime_ns] when they passed."""
    data = _read(path)
    passed = data.get("passed") if isinstance(data, dict) else None
    return passed if isinstance(passed, dict) else {}


def _shards(patterns: list[str], dtype: str) -> dict[str, Any]:
    width = np.dtype(dtype).itemsize
    shards = []
    for pattern in patterns:
        paths = expand_files(pattern)
        if not paths:
            raise DataError(f"{pattern}: no token file")
        for name in paths:
            path = Path(name).resolve()
            size = path.stat().st_size
            if size == 0 or size % width:
                raise DataError(f"{path}: {size} bytes is not a whole number of {dtype} tokens "
                                f"({width} bytes each): truncated, or not {dtype}; check data.token_dtype")
            shards.append({"path": str(path), "tokens": size // width, "bytes": size})
    return {"tokens": sum(s["tokens"] for s in shards), "shards": shards}


def scan_token_file(path: str | Path, dtype: str, vocab_size: int, *, given: str | None) -> None:
    """One-line DataError if the first or last ``SCAN_TOKENS`` ids of a file are outside the vocab,
    or look like a wider dtype's bytes (``given``: data.token_dtype as set; None = from the vocab)."""
    array = np.memmap(path, dtype=dtype, mode="r")
    step = 8 // array.itemsize  # start both samples at a multiple of the widest dtype
    head = np.asarray(array[:SCAN_TOKENS])
    tail = np.asarray(array[max(0, len(array) - SCAN_TOKENS) // step * step:])
    del array
    top = max(int(head.max()), int(tail.max()))
    if top >= vocab_size:
        raise DataError(f"{path}: token id {top} >= the tokenizer's vocab {vocab_size}: made "
                        f"with another tokenizer, or not {dtype} (data.token_dtype)")
    wider = misread_width(head, tail)
    if wider is not None:
        factor, high, low = wider
        right = f"uint{8 * np.dtype(dtype).itemsize * factor}"
        setting = f"data.token_dtype={given}" if given else f"data.token_dtype=null ({dtype} by the vocab)"
        raise DataError(
            f"{setting}: {path} has id 0 at {high:.0%} of the positions that would be the high "
            f"bytes of {right} ids (elsewhere {low:.0%}): it holds {right} (or int{right[4:]}) "
            f"tokens, each read as {factor} {dtype} ids; set data.token_dtype={right}")


def misread_width(*samples: np.ndarray) -> tuple[int, float, float] | None:
    """(factor, zero rate at high-part positions, zero rate at the others) when the ids read look
    like little-endian ids ``factor`` times as wide (2, 4 or 8, the widest that fits in 8 bytes),
    whose high parts are mostly 0; None when id 0 shows no such pattern."""
    width = samples[0].itemsize
    for factor in (8, 4, 2):
        if width * factor > 8:
            continue
        parts = [s[: len(s) // factor * factor].reshape(-1, factor) for s in samples]
        rows = np.concatenate(parts) if parts else np.empty((0, factor))
        if rows.size < MISREAD_MIN_TOKENS:
            continue
        zeros = (rows == 0).mean(axis=0)
        high, low = float(zeros[1:].min()), float(zeros[0])
        if high >= 0.5 and high >= low + MISREAD_GAP:
            return factor, float(zeros[1:].mean()), low
    return None
