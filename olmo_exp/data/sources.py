"""Where articles come from: local MediaWiki dumps, the HF hub (streamed), local jsonl/parquet.

Every source yields records shaped like HF ``wikimedia/wikipedia`` rows: ``{id, url, title, text}``.
Dump records carry raw wikitext (``clean_record`` turns it into prose, in worker processes);
hf/files records are already text.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import importlib.util
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from olmo_exp.data.config import DataConfig, DataSource
from olmo_exp.data.errors import DataError

SAMPLE_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
Record = dict[str, Any]


def sample_dump_path() -> Path | None:
    """The enwiki sample dump inside the installed gensim wheel, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SAMPLE_DUMP
        if path.is_file():
            return path
    return None


def source_paths(cfg: DataConfig) -> list[Path]:
    """The local files a dump/files config reads, sorted (a glob may match several)."""
    if cfg.source == DataSource.dump and cfg.path is None:
        path = sample_dump_path()
        if path is None:
            raise DataError(
                "data.path=None means the gensim sample dump: pip install -e '.[sample]'"
            )
        return [path]
    if cfg.path is None:
        raise DataError(f"data.path=None: data.source={source_name(cfg)} needs a file or glob")
    pattern = os.path.expanduser(cfg.path)
    paths = (
        sorted(Path(p).resolve() for p in glob.glob(pattern))
        if glob.has_magic(pattern)
        else [Path(pattern).resolve()]
    )
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise DataError(f"data.path={cfg.path!r}: no such file")
    return paths


def source_name(cfg: DataConfig) -> str:
    return cfg.source.value if isinstance(cfg.source, DataSource) else str(cfg.source)


def source_identity(cfg: DataConfig) -> dict[str, Any]:
    """What the output depends on about the source (cache key + manifest): files by name and size."""
    kind = source_name(cfg)
    if kind == DataSource.hf.value:
        return {"type": kind, "dataset": cfg.hf_dataset, "config": cfg.hf_config}
    sample = kind == DataSource.dump.value and cfg.path is None
    ident: dict[str, Any] = {
        "type": kind,
        # The sample is keyed by name, not by where this venv keeps it.
        "files": [
            {"path": f"gensim/{SAMPLE_DUMP}" if sample else str(p), "bytes": p.stat().st_size}
            for p in source_paths(cfg)
        ],
    }
    if kind == DataSource.files.value:
        ident["text_column"] = cfg.text_column
    return ident


# ---------------------------------------------------------------------------- dumps


def _open_dump(path: Path) -> IO[bytes]:
    # bz2.open reads multistream dumps (concatenated bz2 streams) as one file.
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_dump(paths: list[Path]) -> Iterator[Record]:
    """Main-namespace, non-redirect pages (latest revision), text = raw wikitext."""
    import mwxml

    for path in paths:
        with _open_dump(path) as f:
            dump = mwxml.Dump.from_file(f)
            db = dump.site_info.dbname or "enwiki"
            lang = db[: -len("wiki")] if db.endswith("wiki") else "en"
            for page in dump:
                text = None
                for rev in page:
                    text = rev.text
                if page.namespace != 0 or page.redirect is not None or not text:
                    continue
                yield {
                    "id": str(page.id),
                    "url": f"https://{lang}.wikipedia.org/wiki?curid={page.id}",
                    "title": page.title,
                    "text": text,
                }


def clean_record(rec: Record) -> Record:
    from olmo_exp.data.clean import clean_wikitext

    return {**rec, "text": clean_wikitext(rec["text"])}


def clean_records(batch: list[Record]) -> list[Record]:
    """Worker-process entry point (module-level so spawn can pickle it)."""
    return [clean_record(r) for r in batch]


# ---------------------------------------------------------------------------- hf / files


def hf_offline_error(cfg: DataConfig) -> None:
    """Without the hub, ``datasets`` would first retry it for ~23 s: fail at once instead."""
    from olmo_exp.data.hub import require_hub

    require_hub(
        f"data.source=hf streams {cfg.hf_dataset} from the Hugging Face hub",
        f"use data.source=dump/files with a local copy of {cfg.hf_dataset}",
    )


def iter_hf(
    cfg: DataConfig, skip: int = 0, on_total: Callable[[int], None] | None = None
) -> Iterator[Record]:
    hf_offline_error(cfg)
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hf_dataset, cfg.hf_config, split="train", streaming=True)
    except Exception as e:  # noqa: BLE001 — network/hub errors become one actionable line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"data.source=hf: cannot stream {cfg.hf_dataset}/{cfg.hf_config}: {msg}"
        ) from None
    splits = getattr(ds.info, "splits", None) or {}
    if on_total is not None and "train" in splits and splits["train"].num_examples:
        on_total(int(splits["train"].num_examples))  # the hub's metadata: an ETA for the bar
    yield from _rows(ds, cfg.text_column, skip)


def _rows(ds: Any, text_column: str, skip: int, batch_size: int = 1000) -> Iterator[Record]:
    # datasets' skip() can pass whole files/shards without decoding them (resume at scale).
    if skip:
        ds = ds.skip(skip)
    # Column batches (arrow → lists) cost ~1/3 of per-row dicts.
    i = skip  # row number: the id of rows that have no id column
    for batch in ds.iter(batch_size=batch_size):
        texts = batch.get(text_column)
        if texts is None:
            raise DataError(
                f"data.text_column={text_column!r}: not in the rows (columns: {sorted(batch)})"
            )
        n = len(texts)
        ids = batch.get("id") or [str(j) for j in range(i, i + n)]
        urls = batch.get("url") or [""] * n
        titles = batch.get("title") or [""] * n
        for rid, url, title, text in zip(ids, urls, titles, texts, strict=True):
            yield {"id": str(rid), "url": url or "", "title": title or "", "text": text or ""}
        i += n


def iter_files(cfg: DataConfig, skip: int = 0) -> Iterator[Record]:
    import datasets

    paths = [str(p) for p in source_paths(cfg)]
    kinds = {"parquet" if p.endswith(".parquet") else "json" for p in paths}
    if len(kinds) > 1:
        raise DataError(f"data.path={cfg.path!r}: mixes parquet and json files; use one format")
    ds = datasets.load_dataset(kinds.pop(), data_files=paths, split="train", streaming=True)
    yield from _rows(ds, cfg.text_column, skip)


def iter_records(
    cfg: DataConfig, skip: int = 0, on_total: Callable[[int], None] | None = None
) -> Iterator[Record]:
    """Source records after the first ``skip`` (not capped at max_articles: the caller does)."""
    kind = source_name(cfg)
    if kind == DataSource.dump.value:
        return itertools.islice(iter_dump(source_paths(cfg)), skip, None)
    if kind == DataSource.hf.value:
        return iter_hf(cfg, skip, on_total)
    return iter_files(cfg, skip)


def needs_cleaning(cfg: DataConfig) -> bool:
    return source_name(cfg) == DataSource.dump.value


def is_validation(article_id: str, fraction: float) -> bool:
    """Deterministic split by a hash of the article id (independent of order, workers, machine)."""
    h = int.from_bytes(hashlib.sha256(article_id.encode()).digest()[:8], "big")
    return h < fraction * 2**64
