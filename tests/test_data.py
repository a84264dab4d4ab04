"""The data package on real data: the enwiki sample dump in gensim, real tokenizers, no mocks."""

from __future__ import annotations

import bz2
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_run
from huggingface_hub import constants as hf_constants

from olmo_exp.base.errors import ConfigError, DataError
from olmo_exp.config.data import DataConfig, DataSource, sample_dump_path
from olmo_exp.data.clean import clean_wikitext
from olmo_exp.data.manifest import MANIFEST, Manifest
from olmo_exp.data.pipeline import config_dict
from olmo_exp.data.prep import load_tokenizer, prepare
from olmo_exp.data.sources import is_validation, iter_dump
from olmo_exp.data.tokenizer import tokenizer_info

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}")

pytestmark = pytest.mark.skipif(
    sample_dump_path() is None, reason="the enwiki sample needs gensim: pip install -e '.[sample]'"
)


# `sample` and `sample_cfg` (conftest.py): the default data set, prepared once per session.


def test_python_and_command_line_configs_share_one_cache(tmp_path: Path) -> None:
    """DataConfig() in Python and `data=wiki_sample` composed by Hydra (512 vs 512.0 MB shards)
    name the same data, so they find the same prepared files."""
    from olmo_exp.data.prep import data_dir

    composed = compose_run(f"data.output_dir={tmp_path}").data
    assert data_dir(DataConfig(output_dir=str(tmp_path))) == data_dir(composed)


@pytest.fixture(scope="session")
def raw_articles() -> list[dict]:
    return list(iter_dump([sample_dump_path()]))


def test_sample_dump_has_106_articles_shaped_like_hf_wikipedia(raw_articles: list[dict]) -> None:
    assert len(raw_articles) == 106
    assert all(set(a) == {"id", "url", "title", "text"} for a in raw_articles)
    first = raw_articles[0]
    assert (first["id"], first["title"]) == ("12", "Anarchism")
    assert first["url"] == "https://en.wikipedia.org/wiki?curid=12"


@pytest.mark.slow
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
    sample.verify(model_vocab_size=8192, check_sha=True, tokenizer=tokenizer_info(DataConfig()))
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
    import olmo_exp.data.pipeline as pipeline_mod

    real = pipeline_mod.Pipeline._write_shard
    calls = {"n": 0}

    def write_shard(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("killed mid-prep")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_mod.Pipeline, "_write_shard", write_shard)


@pytest.mark.slow
def test_interrupted_prep_is_not_complete_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small shards (0.05 MB = 26k uint16 tokens) so 30 articles make several.
    cfg = DataConfig(
        output_dir=str(tmp_path / "a"),
        max_articles=20,
        shard_size_mb=0.05,
        bpe_vocab_size=512,
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
    assert 0 < progress["articles"] < 20
    resumed = prepare(cfg)
    assert resumed.root == root and resumed.data["articles"] == 20
    resumed.verify(model_vocab_size=512, check_sha=True)
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
    other = tokenizer_info(DataConfig(bpe_vocab_size=4096))
    with pytest.raises(DataError, match="made with tokenizer bpe:8192 .* config expects bpe:4096"):
        copy.verify(model_vocab_size=8192, tokenizer=other)
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


@pytest.mark.slow
def test_max_articles(sample_cfg: DataConfig) -> None:
    m = prepare(replace(sample_cfg, max_articles=12, bpe_vocab_size=512, sequence_length=16))
    assert m.data["articles"] == 12
    assert (
        m.data["splits"]["train"]["documents"] + m.data["splits"]["validation"]["documents"] == 12
    )
    assert m.vocab_size == 512 and os.path.isfile(m.root / "tokenizer.json")


# ---------------------------------------------------------------------------- issue 4: at scale

needs_testdata = pytest.mark.skipif(
    not (TESTDATA / "tokenizers" / "allenai_dolma2.json").is_file(),
    reason=f"needs the shared test data (tokenizer JSONs, tiktoken cache) in {TESTDATA}",
)


@pytest.fixture(scope="session")
def cleaned(raw_articles: list[dict]) -> list[dict]:
    from olmo_exp.data.sources import clean_records
    from olmo_exp.data.workers import ordered_map

    batches = [raw_articles[i : i + 8] for i in range(0, len(raw_articles), 8)]
    return [a for b in ordered_map(clean_records, batches, 2) for a in b]


def _write_jsonl(path: Path, rows: list[dict], text_column: str = "text") -> Path:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "title": r["title"], text_column: r["text"]}) + "\n")
    return path


def test_hf_source_offline_fails_at_once_writing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="HF_HUB_OFFLINE") as e:
        prepare(DataConfig(source=DataSource.hf, output_dir=str(tmp_path / "out")))
    assert time.perf_counter() - t0 < 5 and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dump_reads_plain_xml_and_multistream_bz2(tmp_path: Path, raw_articles: list[dict]) -> None:
    xml = bz2.decompress(sample_dump_path().read_bytes())
    plain = tmp_path / "enwiki.xml"
    plain.write_bytes(xml)
    # Multistream, as Wikimedia publishes it: independently compressed chunks, concatenated.
    multi = tmp_path / "enwiki-multistream.xml.bz2"
    step = len(xml) // 3 + 1
    multi.write_bytes(b"".join(bz2.compress(xml[i : i + step]) for i in range(0, len(xml), step)))
    for path in (plain, multi):
        got = list(iter_dump([path]))
        assert [a["id"] for a in got] == [a["id"] for a in raw_articles]
        assert got[-1]["text"] == raw_articles[-1]["text"]


def test_files_source_jsonl_and_parquet_with_text_column(
    tmp_path: Path, cleaned: list[dict], sample: Manifest
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = cleaned[:25]
    jsonl = _write_jsonl(tmp_path / "wiki.jsonl", rows, text_column="body")
    parquet = tmp_path / "wiki.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"id": r["id"], "body": r["text"]} for r in rows]), parquet
    )
    tok = str(sample.root / "tokenizer.json")  # "any tokenizer.json path": the trained BPE
    out = str(tmp_path / "data")
    shas = []
    for path in (jsonl, parquet):
        cfg = DataConfig(
            source=DataSource.files,
            path=str(path),
            text_column="body",
            tokenizer=tok,
            output_dir=out,
            sequence_length=32,
        )
        m = prepare(cfg)
        assert (
            m.data["articles"] == 25 and m.vocab_size == sample.vocab_size and m.dtype == "uint16"
        )
        assert m.data["tokenizer"]["identity"].startswith("sha256:")
        m.verify(model_vocab_size=sample.vocab_size)
        shas.append([s["sha256"] for split in ("train", "validation") for s in m.shards(split)])
    assert shas[0] == shas[1]
    with pytest.raises(DataError, match="data.text_column='text'"):
        prepare(DataConfig(source=DataSource.files, path=str(jsonl), tokenizer=tok, output_dir=out))


def test_files_source_resumes_after_an_interruption(
    tmp_path: Path, cleaned: list[dict], sample: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows without an id column: the split hashes the row number, which a resume must keep.
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({"text": a["text"]}) + "\n" for a in cleaned[:30]))
    cfg = DataConfig(
        source=DataSource.files, path=str(jsonl), tokenizer=str(sample.root / "tokenizer.json"),
        shard_size_mb=0.02, sequence_length=16, output_dir=str(tmp_path / "a"), num_workers=1,
        validation_fraction=0.2,
    )  # fmt: skip
    with monkeypatch.context() as m:
        _flaky_shards(m, fail_at=5)
        with pytest.raises(KeyboardInterrupt):
            prepare(cfg)
    resumed = prepare(cfg)
    fresh = prepare(replace(cfg, output_dir=str(tmp_path / "b")))
    for split in ("train", "validation"):
        assert [s["sha256"] for s in resumed.shards(split)] == [
            s["sha256"] for s in fresh.shards(split)
        ]
    assert resumed.data["splits"]["validation"]["documents"] > 0


@needs_testdata
def test_dolma2_tiktoken_fast_path_equals_hf_tokenizer(
    cleaned: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from olmo_exp.data.tokenizer import BatchEncoder

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TESTDATA / "tiktoken"))
    path = TESTDATA / "tokenizers" / "allenai_dolma2.json"
    fast = BatchEncoder("dolma2", path, 2)
    slow = BatchEncoder("dolma2", path, 2, fast=False)
    assert fast.backend == "tiktoken:cl100k_base" and slow.backend == "tokenizers"
    texts = [a["text"] for a in cleaned] + [
        "a <|endoftext|> b <|pad|>",
        "  spaces\\n\\n\\ttabs ",
        "Ünïcödé 漢字 🙂",
    ]
    got_fast = [a.tolist() for a in fast.submit(texts)()]
    got_slow = [a.tolist() for a in slow.submit(texts)()]
    assert got_fast == got_slow == fast.encode_batch(texts)
    assert sum(map(len, got_fast)) > 500_000
    fast.close()
    slow.close()


@needs_testdata
def test_dolma2_prep_same_shards_through_either_path(
    tmp_path: Path, cleaned: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    jsonl = _write_jsonl(tmp_path / "wiki.jsonl", cleaned[:20])
    cfg = DataConfig(
        source=DataSource.files, path=str(jsonl), tokenizer="dolma2",
        tokenizer_dir=str(TESTDATA / "tokenizers"), sequence_length=64,
    )  # fmt: skip
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TESTDATA / "tiktoken"))
    fast = prepare(replace(cfg, output_dir=str(tmp_path / "fast")))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "no-tiktoken-here"))
    slow = prepare(replace(cfg, output_dir=str(tmp_path / "slow")))
    assert fast.data["tokenizer"]["encoder"] == "tiktoken:cl100k_base"
    assert slow.data["tokenizer"]["encoder"] == "tokenizers"
    assert (fast.dtype, fast.vocab_size, fast.eos_token_id, fast.pad_token_id) == (
        "uint32",
        100278,
        100257,
        100277,
    )
    for split in ("train", "validation"):
        assert [s["sha256"] for s in fast.shards(split)] == [
            s["sha256"] for s in slow.shards(split)
        ]
    fast.verify(model_vocab_size=100352, check_sha=True)
    with pytest.raises(DataError, match="tokenizer vocab 100278 > model vocab_size 50304"):
        fast.verify(model_vocab_size=50304)
    text = cleaned[0]["text"][:2000]
    assert load_tokenizer(fast).decode(load_tokenizer(fast).encode(text)) == text


@needs_testdata
def test_named_tokenizers_resolve_from_a_local_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    from olmo_exp.data.tokenizer import info_from_file, resolve_tokenizer_file

    monkeypatch.setenv("OLMO_EXP_TOKENIZER_DIR", str(TESTDATA / "tokenizers"))
    for name, want in {
        "dolma2": (100278, 100257, 100277),
        "gpt_neox_olmo_dolma_v1_5": (50280, 50279, 1),
    }.items():
        cfg = DataConfig(tokenizer=name)
        path = resolve_tokenizer_file(cfg)
        from_file = info_from_file(name, name, path)
        named = tokenizer_info(cfg)
        assert (named.vocab_size, named.eos_token_id, named.pad_token_id) == want
        assert (from_file.vocab_size, from_file.eos_token_id, from_file.pad_token_id) == want
    monkeypatch.delenv("OLMO_EXP_TOKENIZER_DIR")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="tokenizer_dir"):
        resolve_tokenizer_file(DataConfig(tokenizer="dolma2"))


def test_named_tokenizer_resolves_from_the_eval_wheel(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """Offline, no tokenizer dir: the OLMo-1 tokenizer the eval extra ships is found on disk."""
    from olmo_exp.data.tokenizer import resolve_tokenizer_file

    olmo_eval = pytest.importorskip("olmo_eval")
    shipped = Path(olmo_eval.__file__).parent / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
    monkeypatch.delenv("OLMO_EXP_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    cfg = DataConfig(tokenizer="gpt_neox_olmo_dolma_v1_5")
    assert resolve_tokenizer_file(cfg) == shipped.resolve()
    # data.tokenizer_dir and $OLMO_EXP_TOKENIZER_DIR still come first
    for where in ("dir", "env"):
        local = tmp_path / where
        local.mkdir()
        (local / shipped.name).write_bytes(shipped.read_bytes())
        if where == "env":
            monkeypatch.setenv("OLMO_EXP_TOKENIZER_DIR", str(local))
        cfg = DataConfig(tokenizer="gpt_neox_olmo_dolma_v1_5",
                         tokenizer_dir=str(local) if where == "dir" else None)
        assert resolve_tokenizer_file(cfg) == (local / shipped.name).resolve()


def _prepare_in_process(cfg: DataConfig) -> tuple[str, str]:
    m = prepare(cfg)
    return str(m.root), m.data["created"]


@pytest.mark.slow
def test_concurrent_preps_of_one_key_share_one_result(tmp_path: Path) -> None:
    import multiprocessing as mp

    cfg = DataConfig(
        output_dir=str(tmp_path),
        max_articles=10,
        bpe_vocab_size=300,
        sequence_length=16,
        num_workers=1,
    )
    with mp.get_context("fork").Pool(2) as pool:
        (root_a, created_a), (root_b, created_b) = pool.map(_prepare_in_process, [cfg, cfg])
    assert root_a == root_b and created_a == created_b  # one prepared, the other waited and reused
    Manifest.load(root_a).verify(model_vocab_size=300, check_sha=True)
    assert not [p for p in Path(root_a).rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_killed_prep_is_not_taken_as_complete(tmp_path: Path) -> None:
    """SIGKILL a real prep mid-way (as a preempted job dies): nothing claims completeness."""
    cfg = DataConfig(
        output_dir=str(tmp_path),
        max_articles=25,
        shard_size_mb=0.01,
        bpe_vocab_size=300,
        sequence_length=16,
        num_workers=1,
    )
    code = (
        "import sys; from olmo_exp.config.data import DataConfig; from olmo_exp.data.prep import prepare; "
        f"prepare(DataConfig(**{config_dict(cfg)!r}))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "prep.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while (
            not list(tmp_path.glob("*/progress.json"))
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (root / MANIFEST).exists(), "the prep finished before it could be killed"
    with pytest.raises(DataError):
        Manifest.load(root)
    assert json.loads((root / "progress.json").read_text())["articles"] > 0  # resumes from here
    resumed = prepare(cfg)
    assert resumed.data["articles"] == 25
    resumed.verify(model_vocab_size=300, check_sha=True)


@pytest.mark.slow
def test_prepare_only_entry_point(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "olmo_exp.data", f"data.output_dir={tmp_path / 'data'}",
            "data.max_articles=12", "data.bpe_vocab_size=300", "data.sequence_length=16",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 articles" in done.stdout and "uint16, vocab 300" in done.stdout
    (root,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    assert (root / MANIFEST).is_file()


UNREACHABLE_HUB = "https://huggingface.invalid"  # no route: a name that never resolves


def _without_hub(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in env.items()
           if not k.startswith(("HF_", "OLMO_EXP_TOKENIZER")) and k != "TRANSFORMERS_OFFLINE"}
    return {**env, "HF_ENDPOINT": UNREACHABLE_HUB, "HF_HOME": str(tmp_path / "hf")}


@pytest.mark.parametrize("source", [DataSource.hf, DataSource.files])
def test_unreachable_hub_fails_at_once(source: DataSource, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No route to the hub (as on this offline machine): one quick probe, not ~30 s of retries.
    The hf source needs the hub for its rows, a files source for its dolma2 tokenizer."""
    for k in [k for k in os.environ if k.startswith(("HF_", "OLMO_EXP_TOKENIZER"))]:
        monkeypatch.delenv(k)
    # Both are read from the env when huggingface_hub is imported.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", UNREACHABLE_HUB)
    jsonl = _write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "title": "t", "text": "some text"}])
    cfg = DataConfig(source=source, path=str(jsonl) if source == DataSource.files else None,
                     tokenizer="dolma2", output_dir=str(tmp_path / "out"))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=re.escape(f"{UNREACHABLE_HUB}) cannot be reached")) as e:
        prepare(cfg)
    assert time.perf_counter() - t0 < 5 and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # starts processes
def test_unreachable_hub_from_the_command_line(tmp_path: Path) -> None:
    """``python -m olmo_exp.data data=wiki`` without a hub: the one-line error, exit 2, no retry
    warnings, no run directory."""
    args = [sys.executable, "-m", "olmo_exp.data", "data=wiki", f"data.output_dir={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**_without_hub(dict(os.environ), tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr[-3000:]
    assert f"{UNREACHABLE_HUB}) cannot be reached" in errors[0]
    assert "Retrying" not in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


# -- damaged inputs: one line naming the file and what is wrong, nothing left behind -------------


def _damaged_inputs(tmp: Path, cleaned: list[dict]) -> dict[str, tuple[Path, DataSource, str]]:
    """Damaged copies of real data: name -> (file, source, what the error must say)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dump = sample_dump_path().read_bytes()
    xml = bz2.decompress(dump)
    cases: dict[str, tuple[Path, DataSource, str]] = {}

    def put(name: str, data: bytes, source: DataSource, says: str) -> None:
        (tmp / name).write_bytes(data)
        cases[name] = (tmp / name, source, says)

    put("truncated.xml.bz2", dump[: len(dump) // 2], DataSource.dump, "truncated: the bz2 stream ends early")
    put("corrupt.xml.bz2", dump[:4] + bytes(200), DataSource.dump, "corrupt bz2 data")
    put("truncated.xml", xml[: len(xml) // 2], DataSource.dump, "not well-formed XML")
    put("not-xml.xml", json.dumps(cleaned[0]).encode(), DataSource.dump, "not well-formed XML")
    put("not-a-dump.xml", b"<html><body>hello</body></html>", DataSource.dump, "not a MediaWiki XML export")
    put("empty.xml.bz2", b"", DataSource.dump, "empty file")
    lines = [json.dumps({"id": a["id"], "text": a["text"]}) for a in cleaned[:40]]
    put("empty.jsonl", b"", DataSource.files, "empty file")
    put("blank.jsonl", b"\n\n", DataSource.files, "no records")
    bad = lines[:30] + [lines[30][: len(lines[30]) // 2]] + lines[31:]  # a line cut in half
    put("malformed.jsonl", "\n".join(bad).encode(), DataSource.files, "line 31: not valid JSON")
    put("not-an-object.jsonl", "\n".join([*lines[:3], "[1, 2]"]).encode(), DataSource.files,
        "line 4: a JSON list, not an object")
    put("number-text.jsonl", "\n".join([*lines[:3], '{"id": "x", "text": 5}']).encode(),
        DataSource.files, "line 4: field 'text' holds int, not a string")
    put("latin1.jsonl", "\n".join(lines[:5]).encode() + b'\n{"text": "caf\xe9"}\n', DataSource.files,
        "line 6: not valid JSON")
    gz = __import__("gzip").compress("\n".join(lines).encode())
    put("truncated.jsonl.gz", gz[: len(gz) // 2], DataSource.files, "truncated: the gz stream ends early")
    table = pa.Table.from_pylist([{"id": a["id"], "text": a["text"]} for a in cleaned[:40]])
    pq.write_table(table, tmp / "whole.parquet", row_group_size=10)
    whole = (tmp / "whole.parquet").read_bytes()
    put("truncated.parquet", whole[: len(whole) // 2], DataSource.files, "not a readable parquet file")
    put("jsonl-named.parquet", "\n".join(lines).encode(), DataSource.files, "not a readable parquet file")
    return cases


@pytest.fixture(scope="session")
def damaged(tmp_path_factory: pytest.TempPathFactory, cleaned: list[dict]) -> dict:
    return _damaged_inputs(tmp_path_factory.mktemp("damaged"), cleaned)


DAMAGED = ["truncated.xml.bz2", "corrupt.xml.bz2", "truncated.xml", "not-xml.xml", "not-a-dump.xml",
           "empty.xml.bz2", "empty.jsonl", "blank.jsonl", "malformed.jsonl", "not-an-object.jsonl",
           "number-text.jsonl", "latin1.jsonl", "truncated.jsonl.gz", "truncated.parquet",
           "jsonl-named.parquet"]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_input_is_one_line_naming_the_file(
    name: str, damaged: dict, sample: Manifest, tmp_path: Path
) -> None:
    path, source, says = damaged[name]
    out = tmp_path / "data"
    # Small shards: some are written before the damage is reached, and must not survive it.
    cfg = DataConfig(source=source, path=str(path), tokenizer=str(sample.root / "tokenizer.json"),
                     output_dir=str(out), shard_size_mb=0.005, sequence_length=16, num_workers=1)
    with pytest.raises(DataError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "\n" not in msg and f"data file {path}" in msg and says in msg, msg
    assert not [p for p in out.rglob("*") if p.suffix != ".lock"], list(out.rglob("*"))


def test_records_without_text_are_skipped_and_counted(tmp_path: Path, cleaned: list[dict],
                                                       sample: Manifest) -> None:
    rows = [{"id": a["id"], "text": a["text"]} for a in cleaned[:20]]
    rows[3]["text"], rows[7]["text"] = None, ""
    path = tmp_path / "some-empty.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = prepare(DataConfig(source=DataSource.files, path=str(path), sequence_length=16,
                           tokenizer=str(sample.root / "tokenizer.json"), output_dir=str(tmp_path)))
    assert m.data["articles"] == 20 and m.data["empty_articles"] == 2
    splits = m.data["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 18


@pytest.mark.parametrize("entry", ["run.py", "olmo_exp.data"])
def test_damaged_input_from_the_command_line(entry: str, damaged: dict, sample: Manifest,
                                             tmp_path: Path) -> None:
    """Both entry points: exit 2, one line, no Hydra run directory (no run.log), no data dir."""
    name = "malformed.jsonl" if entry == "run.py" else "truncated.xml.bz2"
    path, source, says = damaged[name]
    group = "files" if source == DataSource.files else "wiki_dump"
    start = [str(REPO / "run.py")] if entry == "run.py" else ["-m", "olmo_exp.data"]
    args = [sys.executable, *start, f"data={group}", f"data.path={path}",
            f"data.tokenizer={sample.root / 'tokenizer.json'}", "data.sequence_length=16",
            f"data.output_dir={tmp_path / 'data'}", "data.shard_size_mb=0.005",
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"data file {path}" in errors[0] and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
    assert not [p for p in (tmp_path / "data").rglob("*") if p.suffix != ".lock"]


# -- data=wiki (source hf) on a local dataset laid out like the hub's wikimedia/wikipedia --------

WIKI_CONFIG = "20231101.en"  # conf/data/wiki.yaml's hf_config


@pytest.fixture(scope="module")
def wiki_dataset(tmp_path_factory: pytest.TempPathFactory, cleaned: list[dict]) -> Path:
    """The enwiki sample as the hub serves wikimedia/wikipedia: parquet shards of id/url/title/text
    rows under <config>/train-*.parquet, the configs declared in README.md. ``datasets`` streams a
    local directory like this one exactly as it streams the hub repository."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("hub") / "wikimedia" / "wikipedia"
    rows = [{k: a[k] for k in ("id", "url", "title", "text")} for a in cleaned]
    for name, part in ((WIKI_CONFIG, rows), ("20231101.sv", rows[:3])):  # another config: not read
        (root / name).mkdir(parents=True)
        half = (len(part) + 1) // 2
        for i, shard in enumerate((part[:half], part[half:])):
            pq.write_table(pa.Table.from_pylist(shard), root / name / f"train-{i:05d}-of-00002.parquet")
    configs = "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
                      for c in (WIKI_CONFIG, "20231101.sv"))
    (root / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    return root


@pytest.fixture(scope="module")
def wiki_cfg(wiki_dataset: Path, sample: Manifest, tmp_path_factory: pytest.TempPathFactory
             ) -> DataConfig:
    """``data=wiki`` as run.py composes it, streaming the local dataset; the sample's tokenizer
    (dolma2, wiki's own, is a hub download)."""
    cfg = compose_run("data=wiki", f"data.hf_dataset={wiki_dataset}",
                      f"data.output_dir={tmp_path_factory.mktemp('wiki-data')}",
                      f"data.tokenizer={sample.root / 'tokenizer.json'}",
                      "data.sequence_length=64").data
    assert (cfg.source, cfg.hf_config) == (DataSource.hf, WIKI_CONFIG)
    return cfg


@pytest.fixture(scope="module")
def wiki(wiki_cfg: DataConfig, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """``prepare(data=wiki)`` through ``datasets.load_dataset(..., streaming=True)``."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        # datasets' lock files: in the test's folder, not ~/.cache.
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))
        return prepare(wiki_cfg)


def test_wiki_streams_a_local_dataset_laid_out_like_the_hub(
    wiki: Manifest, wiki_dataset: Path, cleaned: list[dict], sample: Manifest
) -> None:
    assert wiki.data["source"]["type"] == "hf"
    assert (wiki.data["source"]["dataset"], wiki.data["source"]["config"]) == (
        str(wiki_dataset), WIKI_CONFIG)
    assert wiki.data["articles"] == len(cleaned) == 106  # every row of the config, only those
    splits = wiki.data["splits"]
    assert all(splits[s]["tokens"] > 0 and splits[s]["documents"] > 0 for s in splits)
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 106
    # The rows' own text, tokenized as is (hf rows are not cleaned again), one EOS each.
    tok = load_tokenizer(sample)
    want = {s: 0 for s in splits}
    for a in cleaned:
        split = "validation" if is_validation(a["id"], wiki.data["split"]["validation_fraction"]) else "train"
        want[split] += len(tok.encode(a["text"])) + 1
    assert {s: splits[s]["tokens"] for s in splits} == want


@pytest.mark.slow  # starts run.py
def test_prepared_hf_data_trains_without_the_hub(wiki: Manifest, wiki_cfg: DataConfig,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Prepared where the hub is reachable, trained where it isn't (compute nodes): the hf data
    is reused, never streamed again, in Python and by ``python run.py data=wiki``."""
    from conftest import TINY, cli, losses

    created = wiki.data["created"]
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # streaming now fails at once
    assert prepare(wiki_cfg).root == wiki.root
    run_dir = tmp_path / "run"
    cli("data=wiki", f"data.hf_dataset={wiki_cfg.hf_dataset}", f"data.output_dir={wiki_cfg.output_dir}",
        f"data.tokenizer={wiki_cfg.tokenizer}", *TINY, "train.max_steps=2",
        "train.checkpoint_interval=2", f"hydra.run.dir={run_dir}", cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"}, check=True)
    assert sorted(losses(run_dir)) == [1, 2]
    assert Manifest.load(wiki.root).data["created"] == created  # reused, not prepared again
