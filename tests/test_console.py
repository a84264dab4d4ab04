"""What a person sees: step lines, no library noise, rank 0 on the console, --help, fast answers."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import REPO, TINY, compose, losses, read_jsonl
from omegaconf import OmegaConf

from olmo_exp.cli import usage
from olmo_exp.runtime import console

# "12:04:05 step 3/6 · loss 8.46 · ..." on the console; the same after the file log's prefix.
CONSOLE_STEP = re.compile(r"^\d\d:\d\d:\d\d (step .*)$")


def noise_seen(text: str) -> list[str]:
    """The NOISE messages that occur anywhere in ``text``."""
    return [n.message for n in console.NOISE if re.search(n.message, text)]


def step_lines(stdout: str) -> list[str]:
    return [m.group(1) for line in stdout.splitlines() if (m := CONSOLE_STEP.match(line))]


def test_short_run_caps_its_intervals_and_prints_one_line_per_step(run_cli, tmp_path: Path) -> None:
    """`train.max_steps=4` under longer warmup and intervals (10, 50): each is capped (one notice)
    and each file is written at step 4; the console is one line per step and no library noise."""
    run_dir = tmp_path / "run"
    longer = ["train.warmup_steps=10", "train.checkpoint_interval=50", "train.eval_interval=50",
              "generate.interval=50"]
    proc = run_cli(*TINY, *longer, "train.max_steps=4", run_dir=run_dir)
    out = proc.stdout + proc.stderr
    notice = ("train.warmup_steps=10, train.checkpoint_interval=50, train.eval_interval=50, "
              "generate.interval=50 capped at train.max_steps=4 (longer than the run)")
    assert out.count(notice) == 1
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step4"]
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "eval/lm/validation/CE loss" in r] == [4]
    assert [g["step"] for g in read_jsonl(run_dir / "generations.jsonl")] == [4]
    lines = step_lines(proc.stdout)
    assert all(console.STEP_LINE.match(line) for line in lines), lines
    train_lines = [line for line in lines if " · loss " in line]
    assert [int(line.split()[1].split("/")[0]) for line in train_lines] == [1, 2, 3, 4]
    assert all(line.split()[1].endswith("/4") for line in lines)
    assert lines[-1].startswith("step 4/4 · val ") and "tok/s" in "".join(train_lines[1:]), lines
    assert "training 4 steps from scratch" in proc.stdout
    # the run directory: before the first step line and after the last line
    said = [i for i, line in enumerate(proc.stdout.splitlines()) if line.endswith(f"run directory: {run_dir}")]
    assert len(said) == 2 and said[0] < proc.stdout.splitlines().index(next(
        line for line in proc.stdout.splitlines() if " step 1/4" in line))
    assert said[1] == len(proc.stdout.splitlines()) - 1
    assert re.search(r"finished at step 4/4 in \d+:\d\d · loss \d+\.\d\d · val", proc.stdout)
    # olmo-core's metric block and module listing are not on the console ...
    assert "Transformer(" not in out and "throughput/device/TPS" not in out
    assert "[step=" not in out
    # ... nor the known-harmless library messages (these four all occur in this run otherwise) ...
    log_file = (run_dir / console.LOG_FILE).read_text()
    assert noise_seen(out) == [] and noise_seen(log_file) == []
    # ... while train.log keeps the detail (olmo-core's messages) and the same step lines.
    assert "Checkpoint saved" in log_file and "Transformer(" not in log_file
    assert [line for line in log_file.splitlines() if " step 4/4 · loss " in line]


def test_console_full_brings_back_olmo_core_output(run_cli, tmp_path: Path) -> None:
    # The compact console's dry run (header, table, no module listing): test_lws.py's dry run.
    full = run_cli("dry_run=true", "train.console=full", run_dir=tmp_path / "full")
    assert "Transformer(" in full.stdout and "Building transformer" in full.stdout


def test_noise_filters_drop_only_the_listed_messages(caplog: pytest.LogCaptureFixture) -> None:
    console.install_noise_filters()
    caplog.set_level(logging.INFO)
    logging.getLogger("olmo_core.utils").warning(
        "Will skip setting env var 'OMP_NUM_THREADS' since it's already set to '8'")
    logging.getLogger("olmo_core.utils").warning("Will skip setting env var 'OTHER' since ...")
    logging.getLogger("olmo_core.nn.attention.te_attn_api").warning(
        "transformer_engine unavailable, disabling TE attention: No module named 'x'")
    logging.getLogger("olmo_exp.config.train").warning("transformer_engine unavailable (our own)")
    logging.getLogger("somewhere.else").warning("transformer_engine unavailable elsewhere")
    assert [r.getMessage() for r in caplog.records] == [
        "Will skip setting env var 'OTHER' since ...",
        "transformer_engine unavailable (our own)",
        "transformer_engine unavailable elsewhere",
    ]
    message = ("torch.distributed is disabled, unavailable or uninitialized, assuming the intent "
               "is to save in a single process.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.install_noise_filters()  # its filters go in front of "always"
        warnings.warn_explicit(message, UserWarning, "utils.py", 1,
                               module="torch.distributed.checkpoint.utils")
        warnings.warn_explicit(message, UserWarning, "x.py", 1, module="olmo_exp.runtime.callbacks")
        warnings.warn_explicit("something unknown", UserWarning, "utils.py", 1,
                               module="torch.distributed.checkpoint.utils")
    assert [(str(w.message), w.filename) for w in caught] == [
        (message, "x.py"), ("something unknown", "utils.py")]


def test_step_console_lines_and_progress_bar(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    log_file = tmp_path / "train.log"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    console.configure_logging(log_file=log_file)
    try:
        view = console.StepConsole(total_steps=4, world_size=2, progress_bar=True)
        view.start(2, checkpoint="ckpt/step2")
        view.log_metrics(3, {console.TRAIN_LOSS: 6.812, console.DEVICE_TPS: 1640.0,
                             console.DEVICE_MFU: 38.2}, ended=100.0)
        view.log_metrics(3, {console.VAL_LOSS: 6.801})
        view.log_metrics(4, {console.TRAIN_LOSS: 6.5, console.DEVICE_TPS: 1700.0}, ended=101.0)
        view.finish()
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    out = capsys.readouterr().out
    written = [line.split(": ", 1)[1] for line in log_file.read_text().splitlines()]
    assert written[0] == "resuming at step 2 of 4 from ckpt/step2"
    assert written[1] == "step 3/4 · loss 6.81 · 3,280 tok/s · 38% MFU"
    assert written[2] == "step 3/4 · val 6.80"
    # step 3's validation loss is not shown beside step 4's loss (it would read as current)
    assert re.fullmatch(r"step 4/4 · loss 6\.50 · 3,400 tok/s · eta 0:00", written[3])
    assert written[4].startswith("finished at step 4/4 in ") and written[4].endswith(" · val 6.80")
    assert all(console.STEP_LINE.match(line) for line in written[1:4])
    # With a bar, the step lines are in the file, not printed again below the bar.
    assert "resuming at step 2" in out and "4/4" in out and "step 3/4 · loss" not in out


def test_a_failing_rank_reaches_the_console_with_its_rank(run_cli, tmp_path: Path) -> None:
    # A real 2-rank run in which rank 1 raises after joining the process group.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "import olmo_exp.runtime.launch as launch\n"
        "_join = launch.init_distributed\n"
        "def init_distributed(cfg, *, seed):\n"
        "    _join(cfg, seed=seed)\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        raise RuntimeError('disk full on rank one')\n"
        "launch.init_distributed = init_distributed\n")
    path = os.pathsep.join([str(inject), str(REPO), os.environ.get("PYTHONPATH", "")])
    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "dist=ddp", "dist.nproc_per_node=2", run_dir=run_dir, check=False,
                   env={"PYTHONPATH": path}, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"rank 1 of 2 failed first .*RuntimeError: disk full on rank one", out), out
    assert "[default" not in out  # torch elastic's per-rank line prefixes
    assert "joined gloo process group" in proc.stdout  # rank 0 on the console, once
    assert proc.stdout.count("joined gloo process group") == 1
    rank1 = "".join(p.read_text() for p in (run_dir / "logs").glob("*/attempt_0/1/std*.log"))
    assert re.search(r"\[rank 1\] .* ERROR olmo_exp.runtime.worker: rank 1 failed\nTraceback", rank1)
    assert "RuntimeError: disk full on rank one" in rank1


# -- --help -----------------------------------------------------------------------------------


def run_help(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def conf_groups() -> dict[str, set[str]]:
    """Every group under conf/ and its options, as files on disk."""
    conf = REPO / "conf"
    groups: dict[str, set[str]] = {}
    for path in conf.rglob("*.yaml"):
        if path.parent != conf:
            groups.setdefault(path.parent.relative_to(conf).as_posix(), set()).add(path.stem)
    return groups


def help_groups(text: str) -> dict[str, set[str]]:
    section = text.split("== Config groups")[1].split("\n== ")[0]
    groups: dict[str, set[str]] = {}
    current = ""
    for line in section.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("   "):
            current, _, line = line.strip().partition(" ")
        groups.setdefault(current.lstrip("+"), set()).update(
            o.strip().lstrip("*") for o in line.split(",") if o.strip())
    return groups


def test_help_lists_every_group_option_keys_and_readme_examples() -> None:
    text = run_help(str(REPO / "run.py"))
    shown = help_groups(text)
    for group, options in conf_groups().items():
        if group == "hydra/hydra_logging":  # the log format of Hydra's own lines, not a choice
            continue
        if group.startswith("hydra/"):  # the project's own next to Hydra's plugins
            assert options <= shown.get(group, set()), (group, shown.get(group), options)
        else:
            assert shown.get(group) == options, (group, shown.get(group), options)
    assert "_schema" not in text
    # our launchers, not hydra-submitit-launcher's look-alikes that they wrap
    assert {"local", "slurm"} <= shown["hydra/launcher"]
    assert not {o for o in shown["hydra/launcher"] if o.startswith("submitit_")}
    assert "*olmo_tiny" in text and "*off" in text  # what is in use
    for example in usage.readme_examples():
        assert example in text
    cfg = compose()
    for key in usage.APPS["run"]["keys"]:
        if not key.startswith("hydra."):
            assert OmegaConf.select(cfg, key, default="missing") != "missing", key
            assert f"  {key}=" in text


@pytest.mark.slow  # starts processes
def test_data_cli_help_is_about_data() -> None:
    text = run_help("-m", "olmo_exp.data")
    assert help_groups(text) == {"data": conf_groups()["data"]}
    assert "python -m olmo_exp.data data=wiki" in text and "python run.py" not in text
    assert "  data.max_articles=null" in text


# -- fast answers -----------------------------------------------------------------------------


# LWS on another model from the command line: the group's seed, then a list override on top.
CFG_JOB = ["model=gqa_3kv", "dist=fsdp", "model/lws=openelm", "model.lws.qkv_scalars=[0.25,1.0]",
           "--cfg", "job"]


REJECTED = [["model.n_kv_heads=3"], ["model=gqa_3kv", "model.n_kv_heads=5"]]


@pytest.mark.parametrize("args", [CFG_JOB, ["--help"], *REJECTED],
                         ids=["cfg-job", "help", "rejected", "rejected-gqa"])
def test_answers_without_importing_torch_or_olmo_core(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "run.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == (2 if args in REJECTED else 0), proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hydra" in imported
    heavy = sorted(m for m in imported
                   if m.split(".")[0] in ("torch", "olmo_core", "datasets", "tokenizers", "scipy"))
    assert heavy == []
    assert not (tmp_path / "outputs").exists()
    if args is CFG_JOB:  # ... and --cfg job prints the composed config
        job = OmegaConf.create(proc.stdout)
        assert (job.model.name, job.model.n_kv_heads, job.dist.strategy) == ("gqa_3kv", 3, "fsdp")
        assert job.model.lws.name == "openelm"
        assert list(job.model.lws.qkv_scalars) == [0.25, 1.0]  # the override
        assert list(job.model.lws.fnn_scalars) == [0.5, 4.0]  # the rest: openelm's seed
        assert list(job.model.lws.output_scalars) == [0.8, 1.2]


def test_generated_text_is_shown_on_one_line() -> None:
    from olmo_exp.runtime.generation import one_line

    assert one_line("The universe is\nvast.\r\n\tC:\\x é") == "The universe is\\nvast.\\r\\n\\tC:\\\\x é"
    assert "\n" not in one_line("a\n\nb")


def test_byte_counts_are_human_sized() -> None:
    from olmo_exp.runtime.callbacks import human_bytes

    assert [human_bytes(n) for n in (512, 1536, 12.3 * 2**20, 1.5 * 2**30)] == [
        "512 B", "1.5 KiB", "12.3 MiB", "1.5 GiB"]


def _console_lines(feed) -> list[str]:
    """What the console shows (``HH:MM:SS message``) for what ``feed(view_maker)`` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(console._ConsoleFormatter(0))
    logger = logging.getLogger(console.__name__)
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        feed()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return stream.getvalue().splitlines()


def test_step_lines_come_every_log_interval_with_their_own_steps_time() -> None:
    """log_interval=10 over 23 steps whose metrics arrive in bursts (as olmo-core hands them over,
    long after the steps): lines for steps 10, 20 and the last one (23), each stamped with the
    time its step ended, and an eta from the steps' own times (one step per 60 s here) that does
    not jump with the bursts."""
    start = time.mktime((2026, 12, 7, 10, 0, 0, 0, 0, -1))  # 10:00:00 local, when step 1 ended
    view = console.StepConsole(total_steps=23, log_interval=10)

    def feed() -> None:
        view.start(0, checkpoint=None)
        for burst in (range(1, 11), range(11, 21), range(21, 24)):
            for step in burst:  # the whole burst arrives at once, after its last step
                view.log_metrics(step, {console.TRAIN_LOSS: 9.0 - step / 10},
                                 ended=start + 60 * (step - 1))
        view.show_last_step()

    lines = _console_lines(feed)
    assert lines[1:] == [
        "10:09:00 step 10/23 · loss 8.00 · eta 13:00",
        "10:19:00 step 20/23 · loss 7.00 · eta 3:00",
        "10:22:00 step 23/23 · loss 6.70 · eta 0:00",
    ], lines


def test_an_evaluation_between_log_intervals_gets_its_line() -> None:
    view = console.StepConsole(total_steps=20, log_interval=10)

    def feed() -> None:
        for step in range(1, 21):
            metrics = {console.TRAIN_LOSS: 5.0}
            if step == 15:
                metrics[console.VAL_LOSS] = 4.5
            view.log_metrics(step, metrics, ended=1000.0 + step)
        view.show_last_step()  # step 20 was shown already: nothing more

    shown = [[part for part in line.split(" ", 1)[1].split(" · ") if not part.startswith("eta")]
             for line in _console_lines(feed)]
    assert shown == [["step 10/20", "loss 5.00"], ["step 15/20", "loss 5.00", "val 4.50"],
                     ["step 20/20", "loss 5.00"]], shown


def test_log_interval_gives_the_documented_console_lines_and_metrics_records(
        run_cli, tmp_path: Path) -> None:
    """train.log_interval=10 over 23 steps, validation at step 15 (and at the end), checkpoints at
    20 and 23: console lines and metrics.jsonl records at 10, 15, 20 and 23 (docs/training.md),
    each record with the training time and tokens of every step since the one before (summed
    over the file: the whole run's), and the time its own step ended (not when olmo-core passed
    its metrics on), which is what the console line shows."""
    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "train.max_steps=23", "train.log_interval=10", "train.eval_interval=15",
                   "train.checkpoint_interval=20", "train.warmup_steps=2", run_dir=run_dir,
                   timeout=1800)  # a guard against a hang only: shared machines can be very slow
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 15, 20, 23]
    assert [r["step"] for r in records if console.VAL_LOSS in r] == [15, 23]
    tokens_per_step = 4 * 64  # TINY: 4 sequences of 64 tokens, one rank
    assert [r[console.STEP_TOKENS] for r in records] == [10 * tokens_per_step, 5 * tokens_per_step,
                                                       5 * tokens_per_step, 3 * tokens_per_step]
    for before, record in zip(records, records[1:], strict=False):
        # The steps in between ran between the two records' times.
        assert record["wall_time"] - before["wall_time"] >= record[console.STEP_TIME], (before, record)
    lines = [line for line in proc.stdout.splitlines() if CONSOLE_STEP.match(line)]
    train_lines = [line for line in lines if " · loss " in line]
    assert [int(line.split()[2].split("/")[0]) for line in train_lines] == [10, 15, 20, 23], lines
    for line, record in zip(train_lines, records, strict=True):
        assert line[:8] == time.strftime("%H:%M:%S", time.localtime(record["wall_time"])), (line, record)
    assert " · val " in train_lines[1]


def test_hydras_own_lines_use_the_runs_format(run_cli, tmp_path: Path) -> None:
    """A multirun's launcher lines (Hydra's own logger) read ``12:04:05 message`` like the run's,
    not ``[2026-12-07 00:52:53,455][HYDRA] message``."""
    proc = run_cli("dry_run=true", "model.n_layers=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   "-m", timeout=1800)
    launching = [line for line in proc.stdout.splitlines() if "Launching 2 jobs locally" in line]
    assert len(launching) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d Launching 2 jobs locally",
                                                 launching[0]), proc.stdout
    assert re.search(r"^\d\d:\d\d:\d\d \t#1 : .*model.n_layers=2$", proc.stdout, re.M)
    assert "[HYDRA]" not in proc.stdout + proc.stderr
