"""What a person sees: step lines, no library noise, rank 0 on the console, --help, fast answers."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
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
                             console.DEVICE_MFU: 38.2})
        view.log_metrics(3, {console.VAL_LOSS: 6.801})
        view.log_metrics(4, {console.TRAIN_LOSS: 6.5, console.DEVICE_TPS: 1700.0})
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
