"""Prepare-or-reuse: source → clean text → tokens → headerless token shards + manifest.json.

Layout of ``<output_dir>/<key>/`` (key = hash of everything that changes the files):
``tokenizer.json``, ``train/part-NNNNN.bin``, ``validation/part-NNNNN.bin`` (raw arrays of
``dtype``, one EOS after each document), ``manifest.json`` (written last: its presence means
complete). While running, ``progress.json`` records the shards finished so far and how many source
articles they cover, so an interrupted prep resumes from its last complete shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from olmo_exp.base.errors import DataError
from olmo_exp.config.data import DataConfig, DataSource
from olmo_exp.data.clean import CLEANING_VERSION
from olmo_exp.data.manifest import MANIFEST, SPLITS, Manifest
from olmo_exp.data.pipeline import FORMAT_VERSION, Pipeline
from olmo_exp.data.sources import (
    check_files,
    hf_offline_error,
    needs_cleaning,
    source_identity,
    source_name,
    source_paths,
)
from olmo_exp.data.tokenizer import (
    TextTokenizer,
    TokenizerInfo,
    resolve_tokenizer_file,
    tokenizer_info,
)
from olmo_exp.data.tokens import token_manifest

log = logging.getLogger(__name__)


def cache_key(cfg: DataConfig, info: TokenizerInfo | None = None) -> tuple[str, dict[str, Any]]:
    """(key, what it hashes): the fields that change the files, nothing else (not sequence_length:
    shards are whole documents, independent of how training cuts them; not name/workers/dirs)."""
    info = info or tokenizer_info(cfg)
    keyed = {
        "format": FORMAT_VERSION,
        "source": source_identity(cfg),
        "cleaning": CLEANING_VERSION if needs_cleaning(cfg) else None,
        "max_articles": cfg.max_articles,
        "tokenizer": info.identity,
        "validation_fraction": cfg.validation_fraction,
        # float: 512 (DataConfig's default) and 512.0 (the composed config) are the same data.
        "shard_size_mb": float(cfg.shard_size_mb),
    }
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return digest, keyed


def data_dir(cfg: DataConfig) -> Path:
    """Where ``prepare(cfg)`` puts (or finds) its output."""
    return Path(cfg.output_dir).expanduser().resolve() / cache_key(cfg)[0]


def prepare(cfg: DataConfig, info: TokenizerInfo | None = None) -> Manifest:
    """Prepare the data set (or reuse a complete one) and return its manifest.

    Safe to call from several processes/ranks at once: one prepares under a file lock, the others
    wait and then reuse its output. ``info``: the tokenizer of a config already validated (by
    RunConfig.validate); None = validate ``cfg`` and resolve its tokenizer here.
    """
    if info is None:
        cfg.validate()
        info = tokenizer_info(cfg)
    if source_name(cfg) == DataSource.tokens.value:  # existing token files: checked, not copied
        manifest = token_manifest(cfg, info)
        check_fits(manifest, cfg.sequence_length)
        return manifest
    key, keyed = cache_key(cfg, info)
    root = Path(cfg.output_dir).expanduser().resolve() / key
    if not (root / MANIFEST).is_file():
        # Only preparing reads the source: prepared data is reused offline (compute nodes).
        check_source(cfg)
        # Resolve the tokenizer file first (hub included): a failure leaves nothing on disk. Reuse
        # never needs it: the data dir keeps a copy.
        tok_source = None if cfg.tokenizer == "bpe" else resolve_tokenizer_file(cfg)
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            if not (root / MANIFEST).is_file():  # another process may have finished meanwhile
                try:
                    Pipeline(cfg, info, root, keyed, tok_source).run()
                except DataError:
                    # A damaged source (or tokenizer): nothing prepared from it may be resumed
                    # or reused, even if the file is fixed in place at the same size.
                    shutil.rmtree(root, ignore_errors=True)
                    raise
    manifest = Manifest.load(root)
    check_fits(manifest, cfg.sequence_length)
    return manifest


def check_source(cfg: DataConfig) -> None:
    """Fail before any work when the source can't be read (no hub; missing, empty or, for
    parquet, footer-less files)."""
    if source_name(cfg) == DataSource.hf.value:
        hf_offline_error(cfg)
    else:
        source_identity(cfg)  # resolves the files, DataError if none
        check_files(source_paths(cfg))


def check_fits(manifest: Manifest, sequence_length: int) -> None:
    """Each split must hold at least one training sequence."""
    for split in SPLITS:
        n = manifest.tokens(split)
        if n < sequence_length and (split == "train" or manifest.shards(split)):
            raise DataError(
                f"the {split} split has {n} tokens, fewer than data.sequence_length={sequence_length}: "
                f"lower data.sequence_length, raise data.max_articles or data.validation_fraction"
            )


def load_tokenizer(manifest: Manifest) -> TextTokenizer:
    """The data's tokenizer (a copy lives in the data dir), for prompts and generated text."""
    return TextTokenizer(manifest.tokenizer_path)


