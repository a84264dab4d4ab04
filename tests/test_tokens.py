"""data=tokens: existing olmo-core token files (here: our own prep's shards, as if someone else
had made them) checked like a manifest and trained on in place; mismatches refused in one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CPU_HOST, TINY, assert_one_line_error, compose_run, losses

from olmo_exp.base.errors import DataError
from olmo_exp.data.manifest import Manifest
from olmo_exp.data.prep import prepare


def tokens_overrides(sample: Manifest, train: list[str], validation: list[str] | None = None,
                     *extra: str) -> list[str]:
    out = ["data=tokens", f"data.tokenizer={sample.tokenizer_path}", "data.sequence_length=64",
           f"data.token_files=[{','.join(train)}]"]
    if validation:
        out.append(f"data.validation_token_files=[{','.join(validation)}]")
    return [*out, *extra]


def prepare_tokens(tmp_path: Path, overrides: list[str]) -> Manifest:
    config = compose_run(*overrides, f"data.output_dir={tmp_path / 'cache'}")

    from olmo_exp.data.check import check_run

    tokenizer = check_run(config, CPU_HOST)
    manifest = prepare(config.data, tokenizer)
    manifest.verify(model_vocab_size=config.model.padded_vocab_size(manifest.vocab_size),
                    tokenizer=tokenizer)
    return manifest


def test_token_files_train_in_place(sample: Manifest, run_cli, tmp_path: Path) -> None:
    train, validation = sample.paths("train"), sample.paths("validation")
    run_dir = tmp_path / "run"
    run_cli(*tokens_overrides(sample, train, validation), *TINY, "train.max_steps=3",
            "train.eval_interval=3", run_dir=run_dir)
    assert sorted(losses(run_dir)) == [1, 2, 3]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/lm/validation/CE loss" in r for r in records)
    summary = json.loads((run_dir / "model_summary.json").read_text())["data"]
    assert (summary["train_files"], summary["validation_files"]) == (train, validation)
    assert summary["dtype"] == "uint16"
    # in place: no copy of any token file next to the manifest
    assert list(Path(summary["dir"]).iterdir()) == [Path(summary["dir"]) / "manifest.json"]


def test_token_file_mismatches_are_one_line(sample: Manifest, tmp_path: Path) -> None:
    shard = Path(sample.paths("train")[0])
    # a truncated file: an odd number of bytes of uint16
    cut = tmp_path / "cut.bin"
    cut.write_bytes(shard.read_bytes()[:1001])
    # a file of another tokenizer: ids beyond this vocab (8192)
    foreign = tmp_path / "foreign.bin"
    np.full(4096, 9000, dtype=np.uint16).tofile(foreign)
    # the right file read as the wrong dtype: uint16 pairs become uint32 ids far beyond the vocab
    even = tmp_path / "even.bin"
    shutil.copy(shard, even)
    if even.stat().st_size % 4:
        with even.open("ab") as f:
            f.write(bytes(2))
    cases = [
        ([str(cut)], [], "is not a whole number of uint16 tokens"),
        ([str(foreign)], [], "token id 9000 >= the tokenizer's vocab 8192"),
        ([str(even)], ["data.token_dtype=uint32"], ">= the tokenizer's vocab 8192"),
    ]
    for files, extra, message in cases:
        with pytest.raises(DataError) as err:
            prepare_tokens(tmp_path, tokens_overrides(sample, files, None, *extra))
        assert message in str(err.value) and "\n" not in str(err.value)
    # and the untouched shard passes
    assert prepare_tokens(tmp_path, tokens_overrides(sample, [str(shard)])).paths("train") == [str(shard)]


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["data=tokens"], "data.token_files"),
        (["data=tokens", "data.token_files=[/nonexistent/*.npy]"], "data.token_files"),
        (["data=tokens", "data.token_files=[/etc/hostname]", "data.tokenizer=bpe"], "data.tokenizer"),
        (["data=tokens", "data.token_files=[/etc/hostname]", "data.token_dtype=int8"],
         "data.token_dtype"),
    ],
)
def test_token_config_errors_are_one_line(overrides: list[str], key: str) -> None:
    assert_one_line_error(overrides, key)


def test_wider_ids_read_as_a_narrower_dtype_are_refused(sample: Manifest, tmp_path: Path) -> None:
    """uint32/int32/uint64 files read as uint16: every id is inside the vocab, yet each token is
    read as several, the high ones 0. The zero pattern gives them away, in one line."""
    neox = ["data=tokens", "data.tokenizer=gpt_neox_olmo_dolma_v1_5", "data.sequence_length=64"]
    pytest.importorskip("olmo_eval")  # the OLMo-1 tokenizer (vocab 50,280) it ships
    wide = tmp_path / "arange.bin"
    np.arange(50000, dtype=np.uint32).tofile(wide)
    real = np.fromfile(sample.paths("train")[0], dtype=np.uint16)  # real text, BPE ids; 0 = EOS
    int32, uint64 = tmp_path / "int32.bin", tmp_path / "uint64.bin"
    real.astype(np.int32).tofile(int32)
    real.astype(np.uint64).tofile(uint64)
    cases = [
        (neox, wide, [], "data.token_dtype=null (uint16 by the vocab)", "uint32"),
        (neox, wide, ["data.token_dtype=uint16"], "data.token_dtype=uint16", "uint32"),
        (None, int32, [], "data.token_dtype=null (uint16 by the vocab)", "uint32"),
        (None, uint64, ["data.token_dtype=uint16"], "data.token_dtype=uint16", "uint64"),
        (None, uint64, ["data.token_dtype=uint32"], "data.token_dtype=uint32", "uint64"),
    ]
    for base, path, extra, setting, right in cases:
        overrides = [*(base or tokens_overrides(sample, [])[:-1]), f"data.token_files=[{path}]", *extra]
        with pytest.raises(DataError) as err:
            prepare_tokens(tmp_path, overrides)
        message = str(err.value)
        assert message.startswith(setting + ": ") and "\n" not in message, message
        assert message.endswith(f"set data.token_dtype={right}"), message
        # read as the dtype it names, the same file passes
        fixed = [o for o in overrides if not o.startswith("data.token_dtype=")]
        assert prepare_tokens(tmp_path, [*fixed, f"data.token_dtype={right}"]).tokens("train") > 0
    # real uint16 text whose EOS is id 0 (one per article) is not mistaken for one
    assert prepare_tokens(tmp_path, tokens_overrides(sample, sample.paths("train")))


def test_files_are_scanned_once_while_size_and_mtime_match(sample: Manifest, tmp_path: Path) -> None:
    shard = tmp_path / "shard.bin"
    shutil.copy(sample.paths("train")[0], shard)
    overrides = tokens_overrides(sample, [str(shard)])
    manifest = prepare_tokens(tmp_path, overrides)
    assert manifest.data["passed"][str(shard)] == [shard.stat().st_size, shard.stat().st_mtime_ns]
    # Ids beyond the vocab written in place at the same size and mtime: trusted, not rescanned.
    stat = shard.stat()
    np.full(stat.st_size // 2, 9000, dtype=np.uint16).tofile(shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert prepare_tokens(tmp_path, overrides).root == manifest.root
    # A new mtime: scanned again, and refused.
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="token id 9000 >= the tokenizer's vocab 8192"):
        prepare_tokens(tmp_path, overrides)


def test_token_files_without_validation_train_without_validation_loss(
        sample: Manifest, run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(*tokens_overrides(sample, sample.paths("train")), *TINY, "train.max_steps=3",
                   "train.eval_interval=2", run_dir=run_dir)
    assert sorted(losses(run_dir)) == [1, 2, 3]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("eval/") for r in records for key in r)
    assert "data.validation_token_files is empty: no validation loss" in proc.stderr + proc.stdout
    summary = json.loads((run_dir / "model_summary.json").read_text())["data"]
    assert summary["validation_files"] == []
