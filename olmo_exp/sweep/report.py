"""Sweep reports: one row per job of a multirun, computed from the run directories alone.

``python -m olmo_exp.sweep.report <sweep dir>`` writes ``report.csv``, ``report.md`` and ``report.png``
into the sweep directory. Values come from each job's ``metrics.jsonl``, ``model_summary.json``
and ``.hydra/`` (never recomputed); the job list comes from Hydra's ``multirun.yaml`` (so jobs
that have not started yet are rows too). It can run at any time: while SLURM jobs are still
running, after a crash, or from :class:`SweepReportCallback` after every job of a sweep.

Each single run also gets ``loss.png`` (:func:`olmo_exp.runtime.plots.plot_run`), written by rank 0 after training.
"""

from __future__ import annotations

import atexit
import csv
import json
import math
import sys
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.base.files import atomic_path, dir_lock, read_jsonl, write_atomic
from olmo_exp.config.train import steps_for_tokens
from olmo_exp.runtime.console import TRAIN_LOSS, VAL_LOSS, rank_from_env
from olmo_exp.sweep.failures import failure_line, first_line, write_error_file
from olmo_exp.sweep.plots import write_plot

VAL_PPL = "eval/lm/validation/PPL"
TPS = "throughput/device/TPS (actual avg)"
"""Written into a job's run dir by :class:`SweepReportCallback` when the job raised."""


@dataclass
class JobRow:
    job: int
    overrides: str
    """The overrides that differ between the sweep's jobs (the common ones are in report.md)."""
    status: str
    """finished | failed | running | not started | dry run"""
    error: str = ""
    step: int | None = None
    params: int | None = None
    non_embedding_params: int | None = None
    flops_per_token: int | None = None
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    final_val_ppl: float | None = None
    best_val_loss: float | None = None
    best_val_ppl: float | None = None
    tokens_per_s_device: float | None = None
    train_wall_s: float | None = None
    run_dir: str = ""


@dataclass
class JobData:
    row: JobRow
    all_overrides: list[str]
    curve_tokens_per_step: int | None
    metrics: list[dict[str, Any]]


# -- reading a run directory ------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / "metrics.jsonl")


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file reads as absent
        return None


def tokens_per_step(config: dict | None) -> int | None:
    try:
        return int(config["train"]["global_batch_size"]) * int(config["data"]["sequence_length"])
    except (TypeError, KeyError, ValueError):
        return None


def _target_step(config: dict | None) -> int | None:
    try:
        train = config["train"]
        if train.get("stop_at_step") or train.get("max_steps"):
            return int(train.get("stop_at_step") or train["max_steps"])
        # .hydra/config.yaml keeps the budget as given: a token budget's steps, as the run had them.
        return steps_for_tokens(int(train["max_tokens"]), int(train["global_batch_size"]),
                                int(config["data"]["sequence_length"]))
    except (TypeError, KeyError, ValueError):
        return None


def read_job(run_dir: Path, job: int, overrides: list[str] | None, dry_run: bool = False) -> JobData:
    """One report row from one run directory, whatever state it is in."""
    config = _load_yaml(run_dir / ".hydra" / "config.yaml")
    if overrides is None:
        overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    row = JobRow(job=job, overrides=" ".join(overrides), status="not started", run_dir=str(run_dir))
    data = JobData(row=row, all_overrides=list(overrides), metrics=[],
                   curve_tokens_per_step=tokens_per_step(config))
    if not run_dir.is_dir():
        return data
    summary = None
    if (run_dir / "model_summary.json").exists():
        try:
            summary = json.loads((run_dir / "model_summary.json").read_text())
        except json.JSONDecodeError:
            summary = None
    if summary:
        row.params = summary.get("n_params")
        row.non_embedding_params = summary.get("n_non_embedding_params")
        row.flops_per_token = summary.get("flops_per_token")
    metrics = data.metrics = read_metrics(run_dir)
    if metrics:
        row.step = max(r.get("step", 0) for r in metrics)
        train = [r[TRAIN_LOSS] for r in metrics if TRAIN_LOSS in r]
        row.final_train_loss = train[-1] if train else None
        evals = [r for r in metrics if VAL_LOSS in r]
        if evals:
            row.final_val_loss, row.final_val_ppl = evals[-1][VAL_LOSS], evals[-1].get(VAL_PPL)
            best = min(evals, key=lambda r: r[VAL_LOSS])
            row.best_val_loss, row.best_val_ppl = best[VAL_LOSS], best.get(VAL_PPL)
        tps = [r[TPS] for r in metrics if TPS in r]
        row.tokens_per_s_device = tps[-1] if tps else None
        times = [r["wall_time"] for r in metrics if "wall_time" in r]
        row.train_wall_s = times[-1] - times[0] if len(times) > 1 else None
    failure = failure_line(run_dir)
    target = _target_step(config)
    if failure is not None:
        row.status, row.error = "failed", failure
    elif metrics and target is not None and row.step is not None and row.step >= target:
        row.status = "finished"
    elif dry_run and summary and not metrics:
        row.status = "dry run"
    else:
        # Started, not finished, no error recorded: still running (or killed without a trace).
        row.status = "running"
    return data


# -- the sweep's job list ---------------------------------------------------------------------


def expand_jobs(sweeper_params: dict[str, Any] | None, task_overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, in job-number order, exactly as Hydra's BasicSweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _sweep_jobs(sweep_dir: Path) -> tuple[list[list[str]] | None, bool]:
    """(overrides of every job from multirun.yaml, or None without it; whether it is a dry run)."""
    multirun = _load_yaml(sweep_dir / "multirun.yaml")
    if not multirun:
        return None, False
    hydra = multirun.get("hydra", {})
    params = (hydra.get("sweeper") or {}).get("params")
    task = (hydra.get("overrides") or {}).get("task") or []
    try:
        jobs = expand_jobs(params, task)
    except Exception:  # a sweeper Hydra cannot expand this way: fall back to the job dirs
        return None, bool(multirun.get("dry_run"))
    return jobs, bool(multirun.get("dry_run"))


def collect(sweep_dir: Path) -> tuple[list[JobData], list[str]]:
    """(one JobData per job, the overrides every job shares)."""
    sweep_dir = Path(sweep_dir)
    jobs, dry_run = _sweep_jobs(sweep_dir)
    numbered = sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    count = max(len(jobs or []), (numbered[-1] + 1) if numbered else 0)
    data = [
        read_job(sweep_dir / str(i), i, jobs[i] if jobs and i < len(jobs) else None, dry_run)
        for i in range(count)
        if (jobs and i < len(jobs)) or i in numbered
    ]
    all_sets = [set(d.all_overrides) for d in data if d.all_overrides]
    common = set.intersection(*all_sets) if all_sets else set()
    for d in data:
        d.row.overrides = " ".join(o for o in d.all_overrides if o not in common)
    common_ordered = [o for o in (data[0].all_overrides if data else []) if o in common]
    return data, common_ordered


# -- writing the report -----------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _sort_key(row: JobRow) -> tuple:
    missing = row.final_val_loss is None
    return (missing, row.final_val_loss if not missing else 0.0, row.job)


def write_csv(rows: list[JobRow], path: Path) -> None:
    names = [f.name for f in fields(JobRow)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})


MD_COLUMNS = [
    ("job", "job"), ("overrides", "overrides"), ("status", "status"),
    ("params", "params"), ("non_embedding_params", "non-emb params"),
    ("flops_per_token", "FLOPs/token"), ("step", "step"),
    ("final_train_loss", "train loss"), ("final_val_loss", "val loss"),
    ("final_val_ppl", "val ppl"), ("best_val_loss", "best val loss"),
    ("best_val_ppl", "best val ppl"), ("tokens_per_s_device", "tokens/s/device"),
    ("train_wall_s", "train wall s"), ("error", "error"),
]


def markdown_table(rows: list[JobRow]) -> str:
    lines = ["| " + " | ".join(title for _, title in MD_COLUMNS) + " |",
             "|" + "|".join("---" for _ in MD_COLUMNS) + "|"]
    for row in sorted(rows, key=_sort_key):
        values = asdict(row)
        lines.append("| " + " | ".join(_fmt(values[key]) for key, _ in MD_COLUMNS) + " |")
    return "\n".join(lines)


def write_markdown(sweep_dir: Path, rows: list[JobRow], common: list[str], path: Path) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    text = "\n".join([
        f"# Sweep report: {sweep_dir}",
        "",
        "Jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        f"Common overrides: `{' '.join(common) or '(none)'}`",
        "Sorted by final validation loss, best first. Values from each job's metrics.jsonl and "
        "model_summary.json; tokens/s is olmo-core's per-device average.",
        "",
        markdown_table(rows),
        "",
    ])
    write_atomic(path, text)


def write_report(sweep_dir: Path | str) -> list[JobRow]:
    """Writes report.csv, report.md and report.png into ``sweep_dir``; returns the rows (job order).

    Locked, so that jobs finishing at the same time (submitit) write one report after another.
    """
    sweep_dir = Path(sweep_dir)
    with dir_lock(sweep_dir):
        data, common = collect(sweep_dir)
        rows = [d.row for d in data]
        write_csv(rows, sweep_dir / "report.csv")
        write_markdown(sweep_dir, rows, common, sweep_dir / "report.md")
        write_plot(data, sweep_dir / "report.png",
                   f"{sweep_dir.name}, all jobs: {' '.join(common) or '(no common overrides)'}")
    return rows


# -- one run's loss.png -----------------------------------------------------------------------


# -- the Hydra callback -----------------------------------------------------------------------


class SweepReportCallback(Callback):
    """Keeps ``report.*`` in the sweep dir current: after every job, at the end, and on the way out.

    Hydra's BasicSweeper raises on the first failed job (``on_multirun_end`` is then never called),
    and a rejected job exits the process: so the report is rewritten after each job and once more
    at exit. Under submitit ``on_job_end`` runs inside the job; the report reads only the sweep
    dir, so that works there too.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._open_job: tuple[Path, DictConfig] | None = None
        self._last_line = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_matched_pairs(config)
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self._at_exit)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode is not None and str(config.hydra.mode) == "RunMode.MULTIRUN":
            self._open_job = (Path(str(config.hydra.runtime.output_dir)), config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        self._open_job = None
        run_dir = Path(str(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            write_error_file(run_dir, f"{type(error).__name__}: {first_line(str(error))}\n\n"
                             + "".join(traceback.format_exception(error)))
        self._write(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(str(config.hydra.sweep.dir)))

    def _at_exit(self) -> None:
        if self._open_job is not None:
            # The job left the process (sys.exit: a rejected run) without on_job_end.
            run_dir, config = self._open_job
            self._open_job = None
            write_error_file(run_dir, _rejection_line(config) + "\n")
        if self._sweep_dir is not None and self._sweep_dir.is_dir():
            self._write(self._sweep_dir)

    def _write(self, sweep_dir: Path) -> None:
        if rank_from_env() != 0:
            return
        rows = write_report(sweep_dir)
        line = f"report: {sweep_dir / 'report.md'} ({progress(rows)})"
        if line != self._last_line:  # the end of a sweep rewrites it twice more, unchanged
            print(line, file=sys.stderr)
            self._last_line = line


def progress(rows: list[JobRow]) -> str:
    """``3/4 jobs done, 1 failed``: failed jobs are done, and counted apart so that none hides."""
    done = sum(r.status in ("finished", "failed", "dry run") for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    return f"{done}/{len(rows)} jobs done" + (f", {failed} failed" if failed else "")


def _rejection_line(config: DictConfig) -> str:
    """The one-line error the job printed when it was rejected: validation is deterministic, so
    it is asked again; other rejections (run dir, data) only printed theirs to stderr."""
    from olmo_exp.config.compose import run_config
    from olmo_exp.data.check import check_run

    try:
        check_run(run_config(config))
    except ConfigError as e:
        return f"error: {e}"
    return "exited before finishing (a rejected run prints its one-line error to stderr)"


def _check_matched_pairs(config: DictConfig) -> None:
    """A sweep over equal-budget pairs (olmo_exp.sweep.match) prints the match, and refuses a drifted one
    before any job starts."""
    from olmo_exp.sweep import match

    models = str((config.hydra.sweeper.get("params") or {}).get("model", ""))
    if not any(pair.lws in models.split(",") for pair in match.PAIRS):
        return
    # The budget depends on the data settings (sequence length, vocab), not on sweep axes.
    data = [o for o in config.hydra.overrides.task if o.startswith("data.") and "," not in o]
    try:
        match.check(data)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m olmo_exp.sweep.report <sweep dir>  (writes report.csv/.md/.png there)")
        return 2
    sweep_dir = Path(args[0])
    if not sweep_dir.is_dir():
        print(f"error: sweep dir={str(sweep_dir)!r} is invalid: not a directory", file=sys.stderr)
        return 2
    rows = write_report(sweep_dir)
    print((sweep_dir / "report.md").read_text())
    print(f"wrote {sweep_dir}/report.csv, report.md, report.png ({len(rows)} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
