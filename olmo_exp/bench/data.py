"""Prep throughput vs the raw tokenizer, on the same text in the same run (not a timed test).

    python -m olmo_exp.bench.data [--mb 25] [--tokenizer dolma2] [--workers N]

Repeats the cleaned enwiki sample to >= ``--mb`` MB of text, writes it as jsonl, then measures
(1) the raw tokenizer's batch encode over that text, (2) ``prepare()`` on it as a ``files`` source
(read, split, tokenize, write shards + hashes), and for dolma2 (3) the HF tokenizer vs tiktoken.
Test data (tokenizer JSONs, tiktoken cache) is found in ../shared/testdata unless given. Without
dolma2's tokenizer.json on the machine (a fresh clone), the default tokenizer is the OLMo-1 one
that the ``eval`` extra ships (``gpt_neox_olmo_dolma_v1_5``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"


def _sample_texts() -> list[dict]:
    from olmo_exp.config.data import sample_dump_path
    from olmo_exp.data.sources import clean_records, iter_dump
    from olmo_exp.data.workers import ordered_map

    path = sample_dump_path()
    if path is None:
        sys.exit("the enwiki sample needs gensim: pip install -e '.[sample]'")
    raw = list(iter_dump([path]))
    batches = [raw[i : i + 8] for i in range(0, len(raw), 8)]
    return [a for b in ordered_map(clean_records, batches, os.cpu_count() or 1) for a in b]


def _write_corpus(articles: list[dict], mb: float, out: Path) -> tuple[list[str], int]:
    texts: list[str] = []
    size = 0
    with open(out, "w") as f:
        rep = 0
        while size < mb * 1e6:
            for a in articles:
                row = {**a, "id": f"{a['id']}-{rep}"}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                texts.append(a["text"])
                size += len(a["text"].encode())
            rep += 1
    return texts, size


def _raw_rate(encoder, texts: list[str], batch_chars: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    batch: list[str] = []
    chars = 0
    for t in texts:
        batch.append(t)
        chars += len(t)
        if chars >= batch_chars:
            n += sum(map(len, encoder.encode_batch(batch)))
            batch, chars = [], 0
    if batch:
        n += sum(map(len, encoder.encode_batch(batch)))
    return n / (time.perf_counter() - t0), n


def default_tokenizer(tokenizer_dir: str | None) -> str:
    """dolma2 when its tokenizer.json is in one of the tokenizer dirs, else the OLMo-1 tokenizer,
    which the eval extra's wheel ships (olmo_exp.data.tokenizer finds it there)."""
    from olmo_exp.config.data import KNOWN_TOKENIZERS
    from olmo_exp.data.tokenizer import TOKENIZER_DIR_ENV

    dirs = [d for d in (tokenizer_dir, os.environ.get(TOKENIZER_DIR_ENV)) if d]
    names = KNOWN_TOKENIZERS["dolma2"].files
    if any((Path(d).expanduser() / name).is_file() for d in dirs for name in names):
        return "dolma2"
    return "gpt_neox_olmo_dolma_v1_5"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=25.0, help="MB of text (default 25)")
    ap.add_argument("--tokenizer", default=None,
                    help="default: dolma2 when its tokenizer.json is in --tokenizer-dir or "
                         "$OLMO_EXP_TOKENIZER_DIR, else gpt_neox_olmo_dolma_v1_5 (the eval extra's)")
    ap.add_argument("--workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--tokenizer-dir", default=str(TESTDATA / "tokenizers"))
    ap.add_argument("--tiktoken-dir", default=str(TESTDATA / "tiktoken"))
    ap.add_argument("--skip-hf", action="store_true", help="don't time the HF tokenizer path")
    args = ap.parse_args(argv)
    if Path(args.tiktoken_dir).is_dir():
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", args.tiktoken_dir)
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    from olmo_exp.base.errors import DataError
    from olmo_exp.config.data import DataConfig, DataSource
    from olmo_exp.config.topology import available_cpus
    from olmo_exp.data.pipeline import ENCODE_BATCH_CHARS
    from olmo_exp.data.prep import prepare
    from olmo_exp.data.tokenizer import BatchEncoder, resolve_tokenizer_file

    workers = args.workers or available_cpus()
    tokenizer_dir = args.tokenizer_dir if Path(args.tokenizer_dir).is_dir() else None
    tokenizer = args.tokenizer or default_tokenizer(tokenizer_dir)
    print(f"tokenizer: {tokenizer}")
    with tempfile.TemporaryDirectory(prefix="olmo_exp_bench_") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        t0 = time.perf_counter()
        texts, size = _write_corpus(_sample_texts(), args.mb, corpus)
        print(
            f"corpus: {len(texts)} articles, {size / 1e6:.1f} MB of text ({time.perf_counter() - t0:.1f}s to build)"
        )
        cfg = DataConfig(
            source=DataSource.files, path=str(corpus), tokenizer=tokenizer, num_workers=workers,
            tokenizer_dir=tokenizer_dir, output_dir=str(Path(tmp) / "data"), sequence_length=16,
        )  # fmt: skip
        try:
            tok_file = resolve_tokenizer_file(cfg)
        except DataError as e:
            sys.exit(f"error: {e}")
        fast = BatchEncoder(cfg.tokenizer, tok_file, workers)
        raw_rate, n = _raw_rate(fast, texts, ENCODE_BATCH_CHARS)
        print(
            f"raw tokenizer ({fast.backend}, {workers} threads): {raw_rate:,.0f} tokens/s ({n:,} tokens)"
        )
        # Warm the one-off imports before the clock (datasets imports torch on first streaming
        # use: ~3 s here, paid once per process and already paid in a training run).
        import datasets

        next(
            iter(
                datasets.load_dataset(
                    "json", data_files=[str(corpus)], split="train", streaming=True
                )
            )
        )

        t0 = time.perf_counter()
        manifest = prepare(cfg)
        seconds = time.perf_counter() - t0
        tokens = manifest.tokens("train") + manifest.tokens("validation")
        prep_rate = tokens / seconds
        print(
            f"prepare() ({manifest.data['tokenizer']['encoder']}): {prep_rate:,.0f} tokens/s ({tokens:,} tokens incl. EOS, {seconds:.1f}s)"
        )
        raw_again, _ = _raw_rate(fast, texts, ENCODE_BATCH_CHARS)  # the machine's load drifts
        print(f"raw tokenizer again: {raw_again:,.0f} tokens/s")
        raw_rate = (raw_rate + raw_again) / 2
        print(f"prep / raw = {prep_rate / raw_rate:.2f}")
        if fast.backend.startswith("tiktoken") and not args.skip_hf:
            hf = BatchEncoder(cfg.tokenizer, tok_file, workers, fast=False)
            hf_rate, _ = _raw_rate(hf, texts, ENCODE_BATCH_CHARS)
            print(
                f"raw tokenizer (HF tokenizers): {hf_rate:,.0f} tokens/s; tiktoken / HF = {raw_rate / hf_rate:.2f}"
            )


if __name__ == "__main__":
    main()
