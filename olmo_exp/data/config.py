"""The ``data`` group's schema: where text comes from, how it is tokenized and packed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DataSource(str, Enum):
    dump = "dump"  # local MediaWiki XML dump(s); path null = the enwiki sample shipped in gensim
    hf = "hf"  # Hugging Face datasets, streamed (wikimedia/wikipedia)
    files = "files"  # local jsonl/parquet


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
    """Tokenizer processes (null = all cores)."""
