"""``data=tokens``: existing olmo-core token files as a data set, used in place.

The files get the same interface as prepared data: a small ``manifest.json`` (in
``data.output_dir/tokens-<key>/``, key = hash of the file list, sizes, dtype and tokenizer) that
names them by absolute path, so that the run checks them (``Manifest.verify``) and trains on them
(``Manifest.dataset_config``) exactly as on its own shards. Nothing is copied.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from olmo_exp.base.errors import DataError
from olmo_exp.base.files import write_json_atomic
from olmo_exp.config.data import DataConfig, expand_files
from olmo_exp.data.manifest import MANIFEST, Manifest
from olmo_exp.data.tokenizer import TokenizerInfo, dtype_for_vocab, resolve_tokenizer_file

FORMAT = "tokens-1"
SCAN_TOKENS = 1 << 20
"""Token ids checked against the vocab: this many at the start and at the end of each file
(a wrong dtype or tokenizer shows at once; a whole scan of terabytes would not be worth it)."""


def token_manifest(cfg: DataConfig, info: TokenizerInfo) -> Manifest:
    """Check the token files (present, whole multiples of the dtype, ids inside the tokenizer's
    vocab) and describe them in a manifest: one-line DataError otherwise."""
    dtype = cfg.token_dtype or dtype_for_vocab(info.vocab_size)
    if np.iinfo(dtype).max < info.vocab_size - 1:
        raise DataError(f"data.token_dtype={dtype} cannot hold the tokenizer's vocab "
                        f"{info.vocab_size}; use {dtype_for_vocab(info.vocab_size)} or larger")
    splits = {split: _shards(patterns, dtype, info.vocab_size) for split, patterns in
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
    write_json_atomic(root / MANIFEST, {**data, "key": root.name})
    return Manifest.load(root)


def _shards(patterns: list[str], dtype: str, vocab_size: int) -> dict[str, Any]:
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
            tokens = size // width
            array = np.memmap(path, dtype=dtype, mode="r")
            top = max(int(array[:SCAN_TOKENS].max()), int(array[-SCAN_TOKENS:].max()))
            del array
            if top >= vocab_size:
                raise DataError(f"{path}: token id {top} >= the tokenizer's vocab {vocab_size}: made "
                                f"with another tokenizer, or not {dtype} (data.token_dtype)")
            shards.append({"path": str(path), "tokens": tokens, "bytes": size})
    return {"tokens": sum(s["tokens"] for s in shards), "shards": shards}
