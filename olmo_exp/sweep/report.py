"""Sweep reports: one row per job of a multirun, computed from the run directories alone.

``python -m olmo_exp.sweep.report <sweep dir>`` writes ``report.csv``, ``report.md`` and ``report.png``
into the sweep directory. Values come from each job's ``metrics.jsonl``, ``model_summary.json``
and ``.hydra/`` (never recomputed); the job list comes from Hydra's ``multirun.yaml`` (so jobs
that have not started yet are rows too). It can run at any time: while SLURM jobs are still
running, after a crash, or from :class:`SweepReportCallback` after every job of a sweep.

Each single run also gets ``loss.png`` (:func:`olmo_exp.runtime.plots.plot_run`), written by rank 0 after training.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from olmo_exp.base.files import (
    atomic_path,
    file_lock,
    latest_attempt_config,
    read_jsonl,
    write_atomic,
)
from olmo_exp.config.train import steps_for_tokens
from olmo_exp.runtime.console import (
    DEVICE_TPS_AVG as TPS,
)
from olmo_exp.runtime.console import (
    STEP_TIME,
    STEP_TOKENS,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
)
from olmo_exp.sweep import arm_report, scaling_report
from olmo_exp.sweep.failures import attempt_started, failure_line
from olmo_exp.sweep.jobs import JobData, JobRow
from olmo_exp.sweep.plots import write_plot

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
    """One report row from one run directory, whatever state it is in. A run dir resumed more
    than once holds every attempt's config (:func:`latest_attempt_config`): the latest decides."""
    latest = latest_attempt_config(run_dir)
    config = _load_yaml(latest) if latest is not None else None
    if overrides is None:
        overrides = _load_yaml(latest.with_name("overrides.yaml")) if latest is not None else None
        overrides = overrides or []
    row = JobRow(job=job, overrides=" ".join(overrides), status="not started", run_dir=str(run_dir))
    data = JobData(row=row, all_overrides=list(overrides), metrics=[],
                   curve_tokens_per_step=tokens_per_step(config))
    if not run_dir.is_dir():
        return data
    summary = _read_summary(run_dir)
    if summary and isinstance(summary.get("train"), dict) and isinstance(config, dict):
        # steps and batch as the run resolved them (a ladder's train.size_rule sets them); every
        # attempt rewrites model_summary.json, so these are the latest attempt's too
        config = {**config, "train": {**config.get("train", {}), **summary["train"]}}
        data.curve_tokens_per_step = tokens_per_step(config)
    if summary:
        row.params = summary.get("n_params")
        row.non_embedding_params = summary.get("n_non_embedding_params")
        row.flops_per_token = summary.get("flops_per_token")
        row.kv_cache_bytes_per_token = summary.get("kv_cache_bytes_per_token_bf16")
        row.kv_cache_bytes_per_sequence = summary.get("kv_cache_bytes_per_sequence_bf16")
    metrics = data.metrics = read_metrics(run_dir)
    if metrics:
        row.step = max(r.get("step", 0) for r in metrics)
        data.extra = {**arm_report.extra_eval_metrics(metrics), **offline_eval_metrics(run_dir)}
        train = [r[TRAIN_LOSS] for r in metrics if TRAIN_LOSS in r]
        row.final_train_loss = train[-1] if train else None
        evals = [r for r in metrics if VAL_LOSS in r]
        if evals:
            row.final_val_loss, row.final_val_ppl = evals[-1][VAL_LOSS], evals[-1].get(VAL_PPL)
            best = min(evals, key=lambda r: _or_inf(r[VAL_LOSS]))
            row.best_val_loss, row.best_val_ppl = best[VAL_LOSS], best.get(VAL_PPL)
        row.tokens_per_s_device, row.train_wall_s = training_speed(metrics)
        compute = scaling_report.job_compute(data)
        row.train_flops = round(compute) if compute is not None else None
    row.status, row.error = job_status(run_dir, row, _target_step(config),
                                       dry_run=dry_run and bool(summary))
    return data


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "model_summary.json").read_text())
    except (OSError, json.JSONDecodeError):  # none yet, or half-written
        return None


def _or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def job_status(run_dir: Path, row: JobRow, target: int | None, *, dry_run: bool) -> tuple[str, str]:
    """(status, error) of a started job, from its latest attempt; the first that applies:

    - failed: the latest attempt left an error (error.txt, or olmo-core's failure line in
      train.log, after the attempt began); an earlier attempt's failure does not count;
    - diverged: the last loss (validation, else training) is NaN or infinite: never ranked or
      averaged;
    - finished: the metrics reach the latest attempt's last step (its train.max_steps may differ
      from the first attempt's);
    - dry run: a dry-run sweep's job, which wrote its model summary and trained nothing;
    - running: none of these (or killed without a trace: SLURM's own log says).
    """
    failure = failure_line(run_dir, since=attempt_started(run_dir))
    if failure is not None:
        return "failed", failure
    last_loss = row.final_val_loss if row.final_val_loss is not None else row.final_train_loss
    if last_loss is not None and not math.isfinite(last_loss):
        return "diverged", f"{'validation' if row.final_val_loss is not None else 'training'} " \
                           f"loss is {last_loss} at step {row.step}"
    if row.step is not None and target is not None and row.step >= target:
        return "finished", ""
    if dry_run and row.step is None:
        return "dry run", ""
    return "running", ""


def offline_eval_metrics(run_dir: Path) -> dict[str, float]:
    """The latest ``eval-stepN.json`` that ``python -m olmo_exp.evaluate`` wrote into the run dir,
    as extra columns ``evaluate/<metric>`` (+ ``evaluate/step``); none if there is none."""
    found = {int(p.stem[9:]): p for p in run_dir.glob("eval-step*.json") if p.stem[9:].isdigit()}
    if not found:
        return {}
    record = json.loads(found[max(found)].read_text())
    return {"evaluate/step": record["step"],
            **{f"evaluate/{k}": v for k, v in record.get("metrics", {}).items()}}


def training_speed(metrics: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(tokens/s per device, seconds) of training steps alone: summed over every step record
    (all attempts of a requeued job; no eval, generation or checkpoint time, no queue time).
    Runs without the step timer fall back to olmo-core's running average (which counts the
    time between steps) and the span of the records."""
    timed = [r for r in metrics if STEP_TIME in r and STEP_TOKENS in r]
    seconds = sum(float(r[STEP_TIME]) for r in timed)
    if timed and seconds > 0:
        return sum(float(r[STEP_TOKENS]) for r in timed) / seconds, seconds
    tps = [r[TPS] for r in metrics if TPS in r]
    times = [r["wall_time"] for r in metrics if "wall_time" in r]
    return (tps[-1] if tps else None), (times[-1] - times[0] if len(times) > 1 else None)


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
    """Finished jobs by final validation loss; the others (running: a loss that is not final yet)
    after them, in job order, unranked."""
    ranked = (row.status == "finished" and row.final_val_loss is not None
              and math.isfinite(row.final_val_loss))
    return (not ranked, row.final_val_loss if ranked else 0.0, row.job)


def write_csv(data: list[JobData], path: Path) -> None:
    names = [f.name for f in fields(JobRow)]
    extra = sorted({k for d in data for k in d.extra})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names + extra)
        writer.writeheader()
        for d in data:
            writer.writerow({**{k: ("" if v is None else v) for k, v in asdict(d.row).items()},
                             **d.extra})


MD_COLUMNS = [
    ("job", "job"), ("overrides", "overrides"), ("status", "status"),
    ("params", "params"), ("non_embedding_params", "non-emb params"),
    ("flops_per_token", "FLOPs/token"), ("train_flops", "train FLOPs"),
    ("kv_cache_bytes_per_token", "KV B/token"),
    ("kv_cache_bytes_per_sequence", "KV B/seq"), ("step", "step"),
    ("final_train_loss", "train loss"), ("final_val_loss", "val loss"),
    ("final_val_ppl", "val ppl"), ("best_val_loss", "best val loss"),
    ("best_val_ppl", "best val ppl"), ("tokens_per_s_device", "tokens/s/device"),
    ("train_wall_s", "train wall s"), ("error", "error"),
]


def markdown_table(rows: list[JobRow]) -> str:
    lines = ["| rank | " + " | ".join(title for _, title in MD_COLUMNS) + " |",
             "|---|" + "|".join("---" for _ in MD_COLUMNS) + "|"]
    rank = 0
    for row in sorted(rows, key=_sort_key):
        ranked = not _sort_key(row)[0]
        rank += ranked
        values = asdict(row)
        lines.append(f"| {rank if ranked else '–'} | "
                     + " | ".join(_fmt(values[key]) for key, _ in MD_COLUMNS) + " |")
    return "\n".join(lines)


def write_markdown(sweep_dir: Path, rows: list[JobRow], common: list[str], arms: str,
                   path: Path) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    lengths = sorted({r.kv_cache_bytes_per_sequence // r.kv_cache_bytes_per_token
                      for r in rows if r.kv_cache_bytes_per_token and r.kv_cache_bytes_per_sequence})
    text = "\n".join([
        f"# Sweep report: {sweep_dir}",
        "",
        "Jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        f"Common overrides: `{' '.join(common) or '(none)'}`",
        "",
        arms,
        "",
        "## Jobs",
        "",
        "Finished jobs ranked by final validation loss, best first; running, failed and diverged "
        "(NaN or infinite loss) jobs follow, unranked. Values from each job's metrics.jsonl and model_summary.json. KV B/token: "
        "KV-cache bytes per token at bf16 (Σ over layers of 2 × KV heads × head dim × 2 B); "
        "KV B/seq: for one sequence of the run's data.sequence_length "
        f"({', '.join(map(str, lengths)) or '–'} tokens).",
        "",
        markdown_table(rows),
        "",
    ])
    write_atomic(path, text)


def report_settings(sweep_dir: Path) -> arm_report.ReportSettings:
    """The sweep's hydra.callbacks.sweep_report (preset and command line), from multirun.yaml."""
    multirun = _load_yaml(sweep_dir / "multirun.yaml") or {}
    node = ((multirun.get("hydra") or {}).get("callbacks") or {}).get("sweep_report")
    return arm_report.ReportSettings.from_callback(node)


REPORT_LOCK = ".report.lock"


def write_report(sweep_dir: Path | str) -> list[JobRow]:
    """Writes report.csv, report_arms.csv, report.md and report.png (and, for a ladder,
    report_scaling.csv) into ``sweep_dir``; returns the rows (job order).

    Locked, so that jobs finishing at the same time (submitit) write one report after another,
    each reading what the one before it read or later; every file is replaced by a rename, so a
    reader never sees a torn one.
    """
    sweep_dir = Path(sweep_dir)
    with file_lock(sweep_dir / REPORT_LOCK):
        data, common = collect(sweep_dir)
        rows = [d.row for d in data]
        settings = report_settings(sweep_dir)
        arms = arm_report.arm_report(data, settings)
        scaling = scaling_report.build(data, settings)  # None unless the sweep declares rungs
        write_csv(data, sweep_dir / "report.csv")
        arm_report.write_csv(arms, sweep_dir / "report_arms.csv")
        scaling_report.write_csv(scaling, sweep_dir / "report_scaling.csv")
        write_markdown(sweep_dir, rows, common,
                       arm_report.markdown(arms) + scaling_report.markdown(scaling),
                       sweep_dir / "report.md")
        write_plot(data, arms, sweep_dir / "report.png",
                   f"{sweep_dir.name}, all jobs: {' '.join(common) or '(no common overrides)'}",
                   scaling)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m olmo_exp.sweep.report <sweep dir>  (writes report.csv/.md/.png there)")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
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
