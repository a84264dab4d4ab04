"""The data package on real data: the enwiki sample dump in gensim, real tokenizers, no mocks."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from olmo_exp.data import (
    DataConfig,
    DataError,
    DataSource,
    Manifest,
    load_tokenizer,
    prepare,
    tokenizer_info,
)
from olmo_exp.data.clean import clean_wikitext
from olmo_exp.data.manifest import MANIFEST
from olmo_exp.data.sources import is_validation, iter_dump, sample_dump_path
from olmo_exp.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}")

pytestmark = pytest.mark.skipif(
    sample_dump_path() is None, reason="the enwiki sample needs gensim: pip install -e '.[sample]'"
)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def sample_cfg(data_root: Path) -> DataConfig:
    return DataConfig(output_dir=str(data_root), num_workers=2)


@pytest.fixture(scope="session")
def sample(sample_cfg: DataConfig) -> Manifest:
    """The default data set (sample dump, trained 8k BPE), prepared once per session."""
    return prepare(sample_cfg)


@pytest.fixture(scope="session")
def raw_articles() -> list[dict]:
    return list(iter_dump([sample_dump_path()]))


def test_sample_dump_has_106_articles_shaped_like_hf_wikipedia(raw_articles: list[dict]) -> None:
    assert len(raw_articles) == 106
    assert all(set(a) == {"id", "url", "title", "text"} for a in raw_articles)
    first = raw_articles[0]
    assert (first["id"], first["title"]) == ("12", "Anarchism")
    assert first["url"] == "https://en.wikipedia.org/wiki?curid=12"


def test_cleaning_leaves_prose_without_markup(raw_articles: list[dict]) -> None:
    for a in raw_articles[:40]:
        text = clean_wikitext(a["text"])
        assert text, a["title"]
        assert not MARKUP.search(text), (a["title"], MARKUP.search(text))
        assert "<ref" not in text and "thumb|" not in text
    anarchism = clean_wikitext(raw_articles[0]["text"])
    assert anarchism.startswith(
        "Anarchism is a political philosophy that advocates self-governed societies"
    )


def test_prepared_sample_manifest(sample: Manifest) -> None:
    assert sample.dtype == "uint16" and sample.vocab_size == 8192
    assert (sample.eos_token_id, sample.pad_token_id) == (0, 1)
    splits = sample.data["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 106
    assert sample.data["articles"] == 106
    sample.verify(model_vocab_size=8192, check_sha=True)
    for split in ("train", "validation"):
        for path in sample.paths(split):
            tokens = np.fromfile(path, dtype=np.uint16)  # headerless: raw tokens, nothing else
            assert tokens.max() < 8192
            assert tokens[-1] == sample.eos_token_id
    docs = sum(
        int((np.fromfile(p, dtype=np.uint16) == 0).sum())
        for s in ("train", "validation")
        for p in sample.paths(s)
    )
    assert docs == 106  # one EOS per document
    assert str(sample.numpy_dtype()) == "uint16"


def test_tokenizer_round_trip_on_article_text(sample: Manifest, raw_articles: list[dict]) -> None:
    tok = load_tokenizer(sample)
    for a in raw_articles[:5]:
        text = clean_wikitext(a["text"])
        ids = tok.encode(text)
        assert ids and max(ids) < sample.vocab_size and sample.eos_token_id not in ids
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("Ünïcödé ✓ <|endoftext|> 漢字")) == "Ünïcödé ✓ <|endoftext|> 漢字"


def test_tokenizer_info_without_preparing(tmp_path: Path) -> None:
    info = tokenizer_info(DataConfig(output_dir=str(tmp_path), bpe_vocab_size=4096))
    assert (info.vocab_size, info.eos_token_id, info.pad_token_id, info.dtype) == (
        4096,
        0,
        1,
        "uint16",
    )
    dolma2 = tokenizer_info(DataConfig(tokenizer="dolma2"))
    assert (dolma2.vocab_size, dolma2.eos_token_id, dolma2.pad_token_id, dolma2.dtype) == (
        100278,
        100257,
        100277,
        "uint32",
    )
    assert not any(tmp_path.iterdir())


def test_split_is_deterministic_by_article_id(sample: Manifest, raw_articles: list[dict]) -> None:
    frac = sample.data["split"]["validation_fraction"]
    val = [a["id"] for a in raw_articles if is_validation(a["id"], frac)]
    assert val == [a["id"] for a in raw_articles if is_validation(a["id"], frac)]
    assert 0 < len(val) < 106
    assert sample.data["splits"]["validation"]["documents"] == len(val)


def test_cache_is_reused_without_rewriting(sample: Manifest, sample_cfg: DataConfig) -> None:
    files = sorted(p for p in sample.root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    # Same data, different sequence length / name / workers: same files.
    again = prepare(replace(sample_cfg, sequence_length=128, name="other", num_workers=1))
    assert again.root == sample.root
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in sample.root.rglob("*") if p.is_file()) == files


def test_sequence_length_longer_than_validation_split_is_one_line(
    sample: Manifest, sample_cfg: DataConfig
) -> None:
    n = sample.tokens("validation")
    with pytest.raises(DataError, match=r"data\.sequence_length=") as e:
        prepare(replace(sample_cfg, sequence_length=n + 1))
    assert "\n" not in str(e.value)


def _flaky_shards(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    """Make the prep die on the ``fail_at``-th shard write (what a killed job leaves behind)."""
    import olmo_exp.data.prep as prep_mod

    real = prep_mod._Prep._write_shard
    calls = {"n": 0}

    def write_shard(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("killed mid-prep")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(prep_mod._Prep, "_write_shard", write_shard)


def test_interrupted_prep_is_not_complete_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small shards (0.05 MB = 26k uint16 tokens) so 30 articles make several.
    cfg = DataConfig(
        output_dir=str(tmp_path / "a"),
        max_articles=30,
        shard_size_mb=0.05,
        bpe_vocab_size=1024,
        sequence_length=64,
    )
    with monkeypatch.context() as m:
        _flaky_shards(m, fail_at=4)
        with pytest.raises(KeyboardInterrupt):
            prepare(cfg)
    (root,) = [p for p in (tmp_path / "a").iterdir() if p.is_dir()]
    assert not (root / MANIFEST).exists()
    with pytest.raises(DataError, match="no manifest"):
        Manifest.load(root)
    progress = json.loads((root / "progress.json").read_text())
    assert 0 < progress["articles"] < 30
    resumed = prepare(cfg)
    assert resumed.root == root and resumed.data["articles"] == 30
    resumed.verify(model_vocab_size=1024, check_sha=True)
    assert not (root / "progress.json").exists()
    # Same bytes as an uninterrupted prep.
    fresh = prepare(replace(cfg, output_dir=str(tmp_path / "b")))
    for split in ("train", "validation"):
        assert [s["sha256"] for s in resumed.shards(split)] == [
            s["sha256"] for s in fresh.shards(split)
        ]
    assert len(fresh.shards("train")) > 2


def test_verify_refuses_mismatches(sample: Manifest, tmp_path: Path) -> None:
    copy = Manifest.load(shutil.copytree(sample.root, tmp_path / "copy"))
    with pytest.raises(DataError, match="model vocab_size 4096"):
        copy.verify(model_vocab_size=4096)
    shard = Path(copy.paths("train")[0])
    data = shard.read_bytes()
    shard.write_bytes(data[:-1])
    with pytest.raises(DataError, match="not a multiple of uint16"):
        copy.verify(model_vocab_size=8192)
    shard.write_bytes(data[:-2])
    with pytest.raises(DataError, match="truncated"):
        copy.verify(model_vocab_size=8192)
    shard.write_bytes(data[:-2] + b"\x01\x00")
    with pytest.raises(DataError, match="sha256"):
        copy.verify(model_vocab_size=8192, check_sha=True)
    shard.unlink()
    with pytest.raises(DataError, match="missing"):
        copy.verify(model_vocab_size=8192)
    wrong = Manifest.load(copy.root)
    wrong.dtype = "uint32"  # what a reader that guessed the dtype would claim
    with pytest.raises(DataError, match="dtype uint32 does not match vocab 8192"):
        wrong.verify(model_vocab_size=8192)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"path": "/nonexistent/dump.xml.bz2"}, "data.path"),
        ({"source": DataSource.files, "path": None}, "data.path"),
        ({"max_articles": 0}, "data.max_articles"),
        ({"sequence_length": -1}, "data.sequence_length"),
        ({"tokenizer": "no_such_tokenizer"}, "data.tokenizer"),
        ({"tokenizer": "/nonexistent/tokenizer.json"}, "data.tokenizer"),
        ({"bpe_vocab_size": 100}, "data.bpe_vocab_size"),
        ({"validation_fraction": 0.0}, "data.validation_fraction"),
        ({"validation_fraction": 1.0}, "data.validation_fraction"),
        ({"num_workers": 0}, "data.num_workers"),
        ({"shard_size_mb": 0}, "data.shard_size_mb"),
        ({"tokenizer_dir": "/nonexistent"}, "data.tokenizer_dir"),
    ],
)
def test_validation_errors_are_one_line_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        DataConfig(**overrides).validate()
    assert e.value.key == key
    assert str(e.value).startswith(f"{key}=") and "\n" not in str(e.value)


def test_valid_configs_pass_validation() -> None:
    DataConfig().validate()
    DataConfig(tokenizer="dolma2", source=DataSource.hf).validate()
    DataConfig(tokenizer="allenai/dolma2-tokenizer", num_workers=None, max_articles=None).validate()


def test_max_articles(sample_cfg: DataConfig) -> None:
    m = prepare(replace(sample_cfg, max_articles=12, bpe_vocab_size=512, sequence_length=16))
    assert m.data["articles"] == 12
    assert (
        m.data["splits"]["train"]["documents"] + m.data["splits"]["validation"]["documents"] == 12
    )
    assert m.vocab_size == 512 and os.path.isfile(m.root / "tokenizer.json")
