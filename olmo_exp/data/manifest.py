"""``manifest.json``: what a data dir holds, and the checks that make a dtype/vocab mix-up impossible."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from olmo_exp.base.errors import DataError
from olmo_exp.base.files import sha256_file
from olmo_exp.data.tokenizer import TokenizerInfo, dtype_for_vocab

if TYPE_CHECKING:
    from olmo_core.data import NumpyDatasetConfig, NumpyDatasetDType

MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
SHA_CHECK_MAX_BYTES = 256 << 20  # verify() hashes shards when they total at most this much


@dataclass
class Manifest:
    root: Path
    dtype: str
    vocab_size: int
    eos_token_id: int
    pad_token_id: int
    data: dict[str, Any] = field(repr=False)
    """The whole manifest.json."""

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        root = Path(root)
        path = root / MANIFEST
        try:
            data = json.loads(path.read_text())
            return cls(
                root=root.resolve(),
                dtype=data["dtype"],
                vocab_size=int(data["vocab_size"]),
                eos_token_id=int(data["eos_token_id"]),
                pad_token_id=int(data["pad_token_id"]),
                data=data,
            )
        except FileNotFoundError:
            raise DataError(
                f"{path}: no manifest (data not prepared here); run prepare first"
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{path}: unreadable manifest ({type(e).__name__}: {e}); delete {root} and prepare again"
            ) from None

    def shards(self, split: str) -> list[dict[str, Any]]:
        if split not in SPLITS:
            raise DataError(f"split={split!r} is invalid: one of {', '.join(SPLITS)}")
        return list(self.data["splits"][split]["shards"])

    def paths(self, split: str) -> list[str]:
        """Absolute token-file paths of one split, in order."""
        return [str(self.root / s["path"]) for s in self.shards(split)]

    def tokens(self, split: str) -> int:
        return int(self.data["splits"][split]["tokens"])

    def numpy_dtype(self) -> NumpyDatasetDType:
        from olmo_core.data import NumpyDatasetDType  # lazily: olmo_core imports take seconds

        return NumpyDatasetDType(self.dtype)

    def dataset_config(self, split: str, *, sequence_length: int,
                       work_dir: str) -> NumpyDatasetConfig:
        """olmo-core's dataset over one split: the token stream cut into ``sequence_length``
        sequences (each token file on its own), for training and for validation alike.

        The dtype comes from the manifest, never guessed from the vocab size. ``work_dir`` must be
        shared by all ranks (olmo-core keeps one index there).
        """
        from olmo_core.data import NumpyFSLDatasetConfig, TokenizerConfig

        tokenizer = TokenizerConfig(vocab_size=self.vocab_size, eos_token_id=self.eos_token_id,
                                    pad_token_id=self.pad_token_id)
        return NumpyFSLDatasetConfig(tokenizer=tokenizer, paths=self.paths(split),
                                     sequence_length=sequence_length, dtype=self.numpy_dtype(),
                                     work_dir=work_dir)

    def sequences(self, split: str, sequence_length: int) -> int:
        """How many sequences :meth:`dataset_config` cuts from a split."""
        return sum(int(s["tokens"]) // sequence_length for s in self.shards(split))

    def eval_sequences(self, eval_tokens: int, sequence_length: int) -> int:
        """The validation sequences ``train.eval_tokens`` asks for; one-line DataError if the
        split holds fewer. 0 for token files given without validation files: no validation loss."""
        if self.from_token_files and not self.shards("validation"):
            return 0
        wanted, held = eval_tokens // sequence_length, self.sequences("validation", sequence_length)
        if wanted > held:
            raise DataError(
                f"train.eval_tokens={eval_tokens} is more than the validation split of {self.root} "
                f"holds: {held} sequences of {sequence_length} tokens ({held * sequence_length}); "
                "lower train.eval_tokens or prepare more validation data")
        return wanted

    @property
    def from_token_files(self) -> bool:
        """data=tokens: files made elsewhere, named by absolute path (olmo_exp/data/tokens.py)."""
        return self.data.get("source", {}).get("kind") == "tokens"

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.data["tokenizer"]["file"]

    def verify(
        self,
        *,
        model_vocab_size: int,
        tokenizer: TokenizerInfo | None = None,
        check_sha: bool | None = None,
    ) -> None:
        """One-line DataError if this data can't feed a model with ``model_vocab_size`` embeddings,
        was made with another tokenizer than ``tokenizer`` (e.g. ``tokenizer_info(cfg.data)``), or
        a shard is missing/truncated/corrupt. ``check_sha`` None = hash when the data is small."""
        where = str(self.root)
        if tokenizer is not None:
            ours = (
                self.data["tokenizer"]["identity"],
                self.vocab_size,
                self.eos_token_id,
                self.pad_token_id,
            )
            theirs = (
                tokenizer.identity,
                tokenizer.vocab_size,
                tokenizer.eos_token_id,
                tokenizer.pad_token_id,
            )
            if ours != theirs:
                raise DataError(
                    f"{where}: made with tokenizer {ours[0]} (vocab {ours[1]}, eos {ours[2]}, pad {ours[3]}), "
                    f"config expects {theirs[0]} (vocab {theirs[1]}, eos {theirs[2]}, pad {theirs[3]}); prepare the data again"
                )
        if self.vocab_size > model_vocab_size:
            raise DataError(
                f"{where}: tokenizer vocab {self.vocab_size} > model vocab_size {model_vocab_size}: "
                f"set model.vocab_size >= {self.vocab_size} or use a smaller tokenizer"
            )
        want = dtype_for_vocab(self.vocab_size)
        if self.from_token_files:  # someone else's files: any dtype that holds the vocab
            if np.iinfo(self.dtype).max < self.vocab_size - 1:
                raise DataError(f"{where}: dtype {self.dtype} cannot hold vocab {self.vocab_size}")
        elif self.dtype != want:
            raise DataError(
                f"{where}: dtype {self.dtype} does not match vocab {self.vocab_size} (needs {want}); prepare the data again"
            )
        for name, tid in (("eos_token_id", self.eos_token_id), ("pad_token_id", self.pad_token_id)):
            if not 0 <= tid < self.vocab_size:
                raise DataError(
                    f"{where}: {name}={tid} outside vocab {self.vocab_size}; prepare the data again"
                )
        width = np.dtype(self.dtype).itemsize
        entries = [s for split in SPLITS for s in self.shards(split)]
        for split in SPLITS:
            if not self.shards(split) and not (self.from_token_files and split == "validation"):
                raise DataError(
                    f"{where}: the {split} split has no token files; prepare the data again"
                )
        if check_sha is None:
            check_sha = sum(int(s["bytes"]) for s in entries) <= SHA_CHECK_MAX_BYTES
        for s in entries:
            path = self.root / s["path"]
            if not path.is_file():
                raise DataError(f"{path}: token file missing; delete {where} and prepare again")
            size = path.stat().st_size
            if size % width:
                raise DataError(
                    f"{path}: {size} bytes is not a multiple of {self.dtype} ({width} bytes): corrupt; delete {where} and prepare again"
                )
            if size != int(s["bytes"]) or size != int(s["tokens"]) * width:
                raise DataError(
                    f"{path}: {size} bytes, manifest says {s['bytes']} ({s['tokens']} tokens of {self.dtype}): truncated; delete {where} and prepare again"
                )
            if check_sha and "sha256" in s and sha256_file(path) != s["sha256"]:
                raise DataError(
                    f"{path}: sha256 differs from the manifest: corrupt; delete {where} and prepare again"
                )


