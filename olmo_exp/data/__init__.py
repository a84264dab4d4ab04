"""Data: dump/HF/files → clean text → tokenizer → headerless token shards + manifest.json.

Names are loaded on first use (PEP 562): composing and validating a config imports only
``olmo_exp.data.config``, not the preparation stack (mwparserfromhell, datasets, tokenizers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from olmo_exp.data.config import DataConfig, DataSource
    from olmo_exp.data.errors import DataError
    from olmo_exp.data.manifest import Manifest
    from olmo_exp.data.prep import cache_key, data_dir, load_tokenizer, prepare
    from olmo_exp.data.tokenizer import TextTokenizer, TokenizerInfo, tokenizer_info

_WHERE = {
    "DataConfig": "config",
    "DataSource": "config",
    "DataError": "errors",
    "Manifest": "manifest",
    "cache_key": "prep",
    "data_dir": "prep",
    "load_tokenizer": "prep",
    "prepare": "prep",
    "TextTokenizer": "tokenizer",
    "TokenizerInfo": "tokenizer",
    "tokenizer_info": "tokenizer",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
