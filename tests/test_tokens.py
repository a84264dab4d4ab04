"""data=tokens: existing olmo-core token files (here: our own prep's shards, as if someone else
had made them) checked like a manifest and trained on in place; mismatches refused in one line."""

from __future__ import annotations

import json
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
