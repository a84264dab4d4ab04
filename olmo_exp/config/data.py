"""The ``data`` group's schema: where text comes from, how it is tokenized and packed."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from olmo_exp.base.errors import ConfigError, positive


class DataSource(str, Enum):
    dump = "dump"  # local MediaWiki XML dump(s); path null = the enwiki sample shipped in gensim
    hf = "hf"  # Hugging Face datasets, streamed (wikimedia/wikipedia)
    files = "files"  # local jsonl/parquet
    tokens = "tokens"  # existing olmo-core token files (headerless numpy arrays), used in place


TOKEN_DTYPES = ("uint8", "uint16", "uint32", "uint64")  # olmo-core's NumpyDatasetDType

_HUB_NAME = re.compile(r"^[\w.\-]+/[\w.\-]+$")
BPE_MIN_VOCAB = 256 + 2  # every byte + eos + pad


@dataclass
class DataConfig:
    name: str = "wiki_sample"
    source: DataSource = DataSource.dump
    path: str | None = None
    """dump: .xml/.xml.bz2 file or glob (null = the sample dump); files: jsonl/parquet file or glob."""
    hf_dataset: str = "wikimedia/wikipedia"
    hf_config: str = "20231101.en"
    text_column: str = "text"
    max_articles: int | None = None
    """Stop after this many articles (null = all)."""
    sequence_length: int = 256
    tokenizer: str = "bpe"
    """bpe (byte-level BPE trained on the training split) | dolma2 | gpt_neox_olmo_dolma_v1_5 |
    a tokenizer.json path | a Hugging Face hub name."""
    bpe_vocab_size: int = 8192
    validation_fraction: float = 0.05
    """Share of articles (by a hash of the article id) held out for validation."""
    output_dir: str = "data"
    """Prepared data is cached under output_dir/<hash of this config>/."""
    num_workers: int | None = None
    """Parallelism of prep (null = all cores): wikitext-cleaning processes, and tokenizer threads
    (tiktoken and HF tokenizers encode outside the GIL, so threads scale without pickling)."""
    tokenizer_dir: str | None = None
    """A directory holding tokenizer.json files named like ``allenai_dolma2.json`` for named/hub
    tokenizers (offline); looked in first, then $OLMO_EXP_TOKENIZER_DIR, then the files the eval
    extra ships (olmo_eval/tokenizers/), then the hub."""
    shard_size_mb: float = 512
    """Upper bound on one token file's size."""
    token_files: list[str] = field(default_factory=list)
    """source=tokens: the training token files (paths or globs), read in place, in this order."""
    validation_token_files: list[str] = field(default_factory=list)
    """source=tokens: validation token files (paths or globs); empty = no validation loss."""
    token_dtype: str | None = None
    """source=tokens: the files' dtype (uint16 | uint32 | ...); null = the smallest that holds the
    tokenizer's vocab (olmo-core's guess: uint16 up to 65,536 ids)."""

    def validate(self) -> None:
        """One-line ConfigError naming the key; only existence checks touch the disk."""
        source = self.source.value if isinstance(self.source, DataSource) else self.source
        if source not in {s.value for s in DataSource}:
            raise ConfigError(
                "data.source", source, "one of " + ", ".join(s.value for s in DataSource)
            )
        if source == DataSource.dump.value and self.path is None:
            if sample_dump_path() is None:
                raise ConfigError(
                    "data.path",
                    None,
                    "null means the enwiki sample in gensim, which is not "
                    "installed: pip install -e '.[sample]', or give a dump file",
                )
        elif source == DataSource.tokens.value:
            self._validate_tokens()
        elif source == DataSource.files.value and self.path is None:
            raise ConfigError("data.path", None, "a jsonl/parquet file or glob (data.source=files)")
        elif source not in (DataSource.hf.value, DataSource.tokens.value) and self.path is not None:
            pattern = os.path.expanduser(self.path)
            if not (glob.glob(pattern) if glob.has_magic(pattern) else os.path.isfile(pattern)):
                raise ConfigError(
                    "data.path", self.path, "an existing file (or a glob matching files)"
                )
        if source == DataSource.hf.value and not (self.hf_dataset and self.hf_config):
            raise ConfigError(
                "data.hf_config", self.hf_config, "a dataset config such as 20231101.en"
            )
        if not self.text_column:
            raise ConfigError("data.text_column", self.text_column, "a column name such as text")
        positive("data.max_articles", self.max_articles, allow_none=True)
        positive("data.sequence_length", self.sequence_length)
        tok = self.tokenizer
        if not (
            tok == "bpe"
            or tok in KNOWN_TOKENIZERS
            or os.path.isfile(os.path.expanduser(tok))
            or (_HUB_NAME.match(tok) and not tok.endswith(".json"))
        ):
            valid = (
                "bpe, "
                + ", ".join(KNOWN_TOKENIZERS)
                + ", an existing tokenizer.json, or a hub name (org/name)"
            )
            raise ConfigError("data.tokenizer", tok, valid)
        if (
            isinstance(self.bpe_vocab_size, bool)
            or not BPE_MIN_VOCAB <= self.bpe_vocab_size <= 2**32
        ):
            raise ConfigError(
                "data.bpe_vocab_size",
                self.bpe_vocab_size,
                f"an integer in [{BPE_MIN_VOCAB}, 2**32] (256 bytes + eos + pad)",
            )
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(
                "data.validation_fraction", self.validation_fraction, "strictly between 0 and 1"
            )
        positive("data.num_workers", self.num_workers, allow_none=True)
        positive("data.shard_size_mb", self.shard_size_mb)
        if self.tokenizer_dir is not None and not os.path.isdir(
            os.path.expanduser(self.tokenizer_dir)
        ):
            raise ConfigError(
                "data.tokenizer_dir", self.tokenizer_dir, "an existing directory or null"
            )


    def _validate_tokens(self) -> None:
        if not self.token_files:
            raise ConfigError("data.token_files", [], "a list of token files or globs (data.source=tokens)")
        for key in ("token_files", "validation_token_files"):
            for pattern in getattr(self, key):
                if not expand_files(pattern):
                    raise ConfigError(f"data.{key}", pattern,
                                      "an existing token file (or a glob matching files)")
        if self.tokenizer == "bpe":
            raise ConfigError("data.tokenizer", "bpe",
                              "the tokenizer the token files were made with: a known name ("
                              + ", ".join(KNOWN_TOKENIZERS) + ") or a tokenizer.json path")
        if self.token_dtype is not None and self.token_dtype not in TOKEN_DTYPES:
            raise ConfigError("data.token_dtype", self.token_dtype,
                              "one of " + ", ".join(TOKEN_DTYPES) + ", or null")


def expand_files(pattern: str) -> list[str]:
    """The files a path or glob names (sorted; ~ expanded); [] if none."""
    pattern = os.path.expanduser(pattern)
    if glob.has_magic(pattern):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    return [pattern] if os.path.isfile(pattern) else []


@dataclass(frozen=True)
class _Known:
    hub: str
    files: tuple[str, ...]
    vocab_size: int
    eos_token_id: int
    pad_token_id: int
    tiktoken: str | None = None



KNOWN_TOKENIZERS: dict[str, _Known] = {
    "dolma2": _Known(
        "allenai/dolma2-tokenizer",
        ("allenai_dolma2.json", "allenai_dolma2-tokenizer.json"),
        100278, 100257, 100277, tiktoken="cl100k_base",
    ),
    "gpt_neox_olmo_dolma_v1_5": _Known(
        "allenai/gpt-neox-olmo-dolma-v1_5",
        ("allenai_gpt-neox-olmo-dolma-v1_5.json",),
        50280, 50279, 1,
    ),
}  # fmt: skip


SAMPLE_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"



def sample_dump_path() -> Path | None:
    """The enwiki sample dump inside the installed gensim wheel, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SAMPLE_DUMP
        if path.is_file():
            return path
    return None
