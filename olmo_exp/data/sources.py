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
import itertools
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

from olmo_exp.base.errors import DataError
from olmo_exp.config.data import SAMPLE_DUMP, DataConfig, DataSource, sample_dump_path

Record = dict[str, Any]


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


def _open_compressed(raw: IO[bytes], path: Path) -> IO[bytes]:
    # bz2 reads multistream dumps (concatenated bz2 streams) as one file.
    if path.suffix == ".bz2":
        return bz2.BZ2File(raw)
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)
    return raw


def _damaged(path: Path, raw: IO[bytes], e: BaseException) -> DataError:
    """One line naming the file, where reading stopped and why (the caller raises it)."""
    size = path.stat().st_size
    at = f"at byte {raw.tell():,} of {size:,}" if not raw.closed else f"({size:,} bytes)"
    detail = str(e).splitlines()[0] if str(e) else ""
    why = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    if isinstance(e, EOFError):
        what = f"truncated: the {path.suffix.lstrip('.')} stream ends early"
    elif isinstance(e, (OSError, zlib.error)):
        what = f"corrupt {path.suffix.lstrip('.')} data"
    elif isinstance(e, ElementTree.ParseError):
        what = "not well-formed XML (truncated, or not an XML dump)"
    else:
        what = "not a MediaWiki XML export"
    return DataError(f"data file {path}: {what} {at} ({why})")


def iter_dump(paths: list[Path]) -> Iterator[Record]:
    """Main-namespace, non-redirect pages (latest revision), text = raw wikitext.

    A file that can't be read to its end (truncated or corrupt archive, malformed XML, not a
    MediaWiki export) is a DataError naming it: a dump that silently ends early would look whole.
    """
    import mwxml

    for path in paths:
        if path.stat().st_size == 0:
            raise DataError(f"data file {path}: empty file (0 bytes)")
        with open(path, "rb") as raw:
            try:
                dump = mwxml.Dump.from_file(_open_compressed(raw, path))
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
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001 — whatever mwxml/bz2/gzip raise on a damaged file
                raise _damaged(path, raw, e) from None


def clean_record(rec: Record) -> Record:
    from olmo_exp.data.clean import clean_wikitext

    return {**rec, "text": clean_wikitext(rec["text"])}


def clean_records(batch: list[Record]) -> list[Record]:
    """Worker-process entry point (module-level so spawn can pickle it)."""
    return [clean_record(r) for r in batch]


# ---------------------------------------------------------------------------- hf / files


def hf_offline_error(cfg: DataConfig) -> None:
    """Without the hub, ``datasets`` would first retry it for ~23 s: fail at once instead. A local
    directory laid out like the hub's dataset (``<dir>/<config>/*.parquet`` and a README.md
    naming the configs) is read by ``datasets`` without the hub."""
    from olmo_exp.data.hub import require_hub

    if is_local_dataset(cfg):
        return
    require_hub(
        f"data.source=hf streams {cfg.hf_dataset} from the Hugging Face hub",
        f"use data.source=dump/files with a local copy of {cfg.hf_dataset}",
    )


def is_local_dataset(cfg: DataConfig) -> bool:
    return os.path.isdir(os.path.expanduser(cfg.hf_dataset))


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


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def _file_record(row: Any, text_column: str, index: int, where: str) -> Record:
    """A jsonl/parquet row as a record; a row without usable fields is a DataError at ``where``."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON {type(row).__name__}, not an object")
    if text_column not in row:
        raise DataError(
            f"{where}: no {text_column!r} field (fields: {', '.join(sorted(row)) or 'none'}); "
            f"data.text_column={text_column!r} must name the text field"
        )
    text = row[text_column]
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: field {text_column!r} holds {type(text).__name__}, not a string")
    rid = row.get("id")
    return {"id": str(index if rid is None else rid), "url": row.get("url") or "",
            "title": row.get("title") or "", "text": text or ""}  # fmt: skip


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    """(parsed row, where) for each JSON line (blank lines aside); a file holding one JSON array
    of objects is read whole. Anything unreadable is a DataError naming the file and line."""
    with open(path, "rb") as raw:
        f = _open_compressed(raw, path)
        line_no = 0
        try:
            first = f.peek(1)[:1] if hasattr(f, "peek") else b""
            if first == b"[":  # a JSON array, not JSON lines
                rows = json.load(f)
                for i, row in enumerate(rows if isinstance(rows, list) else [rows], start=1):
                    yield row, f"data file {path}, item {i}"
                return
            for line_no, line in enumerate(f, start=1):  # noqa: B007 — read in the except
                if line.strip():
                    yield json.loads(line), f"data file {path}, line {line_no}"
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            where = f", line {line_no}" if line_no else ""
            detail = (f"{e.msg.removesuffix(' at')}, column {e.colno}" if isinstance(e, json.JSONDecodeError)
                      else str(e).splitlines()[0])
            raise DataError(f"data file {path}{where}: not valid JSON ({detail})") from None
        except (EOFError, OSError, zlib.error) as e:
            raise _damaged(path, raw, e) from None


def _parquet_rows(path: Path, skip: int) -> Iterator[tuple[Any, str]]:
    """(row, where) of a parquet file after its first ``skip`` rows (whole row groups are skipped
    from the footer's counts); a damaged file is a DataError naming it and the row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"data file {path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    row = 0
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        if row + n <= skip:
            row += n
            continue
        at = row
        batches = pf.iter_batches(batch_size=1024, row_groups=[group])  # bounded memory
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                raise DataError(
                    f"data file {path}: row group {group} (rows {row}-{row + n - 1}) is damaged "
                    f"({str(e).splitlines()[0]})"
                ) from None
            if batch is None:
                break
            for r in batch.to_pylist():
                if at >= skip:
                    yield r, f"data file {path}, row {at}"
                at += 1
        row += n


def check_files(paths: list[Path]) -> None:
    """The cheap checks before any work: each file non-empty, each parquet footer readable."""
    for path in paths:
        if path.stat().st_size == 0:
            raise DataError(f"data file {path}: empty file (0 bytes)")
        if _is_parquet(path):
            next(iter(_parquet_rows(path, skip=1 << 62)), None)  # opens the footer, reads no rows


def iter_files(cfg: DataConfig, skip: int = 0) -> Iterator[Record]:
    """Rows of local jsonl (also .json, .jsonl.gz/.bz2) or parquet files, in file order.

    Read here rather than through ``datasets`` so that a damaged file is reported by name and
    line (or row group). Malformed rows are fatal; rows whose text is empty or null are kept as
    empty records (prep skips and counts them)."""
    paths = source_paths(cfg)
    check_files(paths)
    index = 0  # row number across the files: the id of rows that have no id
    for path in paths:
        rows = 0
        if _is_parquet(path):
            # Whole files before ``skip`` are passed by their footer's row count.
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
            if index + n <= skip:
                index += n
                continue
            source = _parquet_rows(path, skip - index)
            index = max(index, skip)
        else:
            source = _jsonl_rows(path)
        for row, where in source:
            rows += 1
            if index >= skip:
                yield _file_record(row, cfg.text_column, index, where)
            index += 1
        if rows == 0 and not _is_parquet(path):
            raise DataError(f"data file {path}: no records (only blank lines)")


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
