"""Data: dump/HF/files → clean text → tokenizer → headerless token shards + manifest.json."""

from olmo_exp.data.config import DataConfig, DataSource
from olmo_exp.data.errors import DataError
from olmo_exp.data.manifest import Manifest
from olmo_exp.data.prep import cache_key, data_dir, load_tokenizer, prepare
from olmo_exp.data.tokenizer import TextTokenizer, TokenizerInfo, tokenizer_info

__all__ = [
    "DataConfig",
    "DataError",
    "DataSource",
    "Manifest",
    "TextTokenizer",
    "TokenizerInfo",
    "cache_key",
    "data_dir",
    "load_tokenizer",
    "prepare",
    "tokenizer_info",
]
