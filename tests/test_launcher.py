"""Sweeps through ``hydra/launcher=slurm|local`` (olmo_exp.sweep.launcher), without a SLURM cluster.

Fast: the launcher YAMLs compose to the resources a job asks for; every sweep point is validated
with its job's rank layout; the launcher's refusals (an invalid point, no sbatch, no -m) are one
line, exit 2, nothing left behind. Slow (marked): a real sweep through submitit's local executor,
with a job that fails at run time and a job interrupted by the time-limit signal, requeued and
resumed. The same behaviours through real sbatch are in tests/slurm/.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, cli, compose, compose_run, losses, read_jsonl
from omegaconf import OmegaConf

from olmo_exp.base.errors import ConfigError
from olmo_exp.config.cluster import gres_gpus, tasks_per_node
from olmo_exp.sweep.launcher import validate_for_layout

PLAIN = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4"]


# What `sinfo -h -o "%P|%G|%f|%N"` prints on a cluster (one line per node group of a partition,
# "*" after the default partition, "(null)" for no GRES or no features), read by the real parser:
# the fast tests do not depend on the cluster (or its absence) on the machine that runs them.
SINFO_OUT = """debug*|(null)|(null)|cpu[001-004]
gpu|gpu:h100:8(S:0-1)|h100,ib|gpu[001-016]
mixed|gpu:h100:8(S:0-1)|h100,ib|gpu[017-020]
mixed|gpu:a100:4(S:0)|a100|gpu[021-022]
mixed|(null)|cpu|cpu[005-008]
shard|gpu:8,shard:16|(null)|s[01-02]
"""


@pytest.fixture(autouse=True)
def _fake_sinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    from olmo_exp.config import cluster

    monkeypatch.setattr(cluster, "sinfo_groups", lambda: tuple(cluster.parse_sinfo(SINFO_OUT)))


def launcher(*overrides: str, name: str = "slurm") -> dict:
    """The launcher settings a job of this sweep gets (hydra.launcher, resolved)."""
    cfg = compose([f"hydra/launcher={name}", *overrides], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(params, dict)
    return params


def test_slurm_launcher_defaults_one_cpu_task() -> None:
    params = launcher()
    assert params["_target_"] == "hydra_plugins.olmo_exp_launcher.SlurmLauncher"
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (1, 1, None)
    for key in ("cpus_per_task", "mem_gb", "timeout_min", "signal_delay_s", "max_num_timeout",
                "array_parallelism", "setup", "partition", "account", "qos", "constraint"):
        assert key in params, key


def test_slurm_launcher_follows_the_dist_group() -> None:
    # The README's FSDP job: 2 nodes x 4 ranks, one GPU per rank.
    params = launcher("dist=fsdp", "dist.nodes=2", "dist.nproc_per_node=4",
                      "hydra.launcher.partition=gpu")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["partition"] == "gpu"
    # null nproc: one rank per GPU requested (dist=single: one); CPU nodes: ranks without GPUs.
    assert launcher("dist=fsdp", "hydra.launcher.gpus_per_node=8")["tasks_per_node"] == 8
    assert launcher("hydra.launcher.gpus_per_node=8")["tasks_per_node"] == 1
    cpu = launcher("dist=fsdp", "dist.nproc_per_node=2", "hydra.launcher.gpus_per_node=0")
    assert (cpu["tasks_per_node"], cpu["gpus_per_node"]) == (2, 0)
    local = launcher("dist=fsdp", "dist.nproc_per_node=2", name="local")
    assert local["_target_"] == "hydra_plugins.olmo_exp_launcher.LocalLauncher"
    assert (local["nodes"], local["tasks_per_node"]) == (1, 2)


def test_tasks_per_node_rule() -> None:
    assert [tasks_per_node(None, None), tasks_per_node(None, 0), tasks_per_node(None, 4),
            tasks_per_node(2, None), tasks_per_node(2, 8)] == [1, 1, 4, 2, 2]
    assert tasks_per_node(None, 4, "single") == 1


def test_sinfo_lines_are_read_as_node_groups() -> None:
    from olmo_exp.config.cluster import parse_sinfo

    groups = parse_sinfo(SINFO_OUT)
    assert [(g.partition, g.default, g.gpus, sorted(g.features), g.nodes) for g in groups] == [
        ("debug", True, 0, [], "cpu[001-004]"),
        ("gpu", False, 8, ["h100", "ib"], "gpu[001-016]"),
        ("mixed", False, 8, ["h100", "ib"], "gpu[017-020]"),
        ("mixed", False, 4, ["a100"], "gpu[021-022]"),
        ("mixed", False, 0, ["cpu"], "cpu[005-008]"),
        ("shard", False, 8, [], "s[01-02]"),  # gpu:8,shard:16: 8 GPUs, shards are not GPUs
    ]


@pytest.mark.parametrize(("partition", "constraint", "gpus"), [
    (None, None, 0), ("debug", None, 0), ("gpu", None, 8), ("shard", None, 8), ("nope", None, None),
    ("mixed", "h100", 8), ("mixed", "a100", 4), ("mixed", "cpu", 0), ("mixed", "h100&ib", 8),
    ("mixed", "[a100|cpu]", None),  # either: the constraint still leaves nodes that differ
    ("mixed", "v100", None),  # no such nodes: sbatch will say so
])
def test_partition_gpus_reads_the_nodes_a_job_may_get(partition, constraint, gpus) -> None:
    from olmo_exp.config.cluster import partition_gpus

    if partition == "mixed" and constraint == "[a100|cpu]":
        with pytest.raises(ConfigError, match="gpu\\[021-022\\]: gpu:a100:4"):
            partition_gpus(partition, constraint)
        return
    assert partition_gpus(partition, constraint) == gpus


def test_a_partition_of_nodes_that_differ_is_refused_in_one_line() -> None:
    """A GPU partition that also holds CPU-only nodes: the job could land on either, and would
    then train on CPU unnoticed. One line names the node groups and the two ways to pick."""
    from olmo_exp.config.cluster import check_partition_gpus

    cfg = compose(["hydra/launcher=slurm", "dist=fsdp", "cluster.partition=mixed"], hydra=True)
    with pytest.raises(ConfigError) as err:
        check_partition_gpus(cfg.hydra.launcher)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cluster.partition='mixed'")
    for part in ("gpu[017-020]: gpu:h100:8(S:0-1)", "gpu[021-022]: gpu:a100:4(S:0)",
                 "cpu[005-008]: no GPUs", "cluster.gpus_per_node", "cluster.constraint"):
        assert part in message, (part, message)
    # Saying which nodes: a constraint (GPUs from those nodes), or the GPUs themselves.
    for picked, gpus in ((["cluster.constraint=h100"], 8), (["cluster.constraint=cpu"], None),
                         (["cluster.gpus_per_node=4"], 4), (["hydra.launcher.gpus_per_node=0"], 0)):
        cfg = compose(["hydra/launcher=slurm", "dist=fsdp", "cluster.partition=mixed", *picked],
                      hydra=True)
        check_partition_gpus(cfg.hydra.launcher)
        assert OmegaConf.select(cfg, "hydra.launcher.gpus_per_node") == gpus, picked
    # The default partition of this cluster has one kind of node: nothing to refuse.
    check_partition_gpus(compose(["hydra/launcher=slurm"], hydra=True).hydra.launcher)


def test_loader_workers_beyond_a_tasks_cpus_get_one_line() -> None:
    """train=olmo2 starts 4 data-loader workers per rank; a SLURM task gets 1 CPU unless the
    profile asks for more: the sweep says so once, with the setting that fixes it."""
    from olmo_exp.config.cluster import loader_cpus_notice
    from olmo_exp.config.compose import run_config

    def notice(*overrides: str) -> str:
        cfg = compose(["hydra/launcher=slurm", *overrides], hydra=True)
        cpus = OmegaConf.select(cfg, "hydra.launcher.cpus_per_task")
        return loader_cpus_notice(run_config(cfg).train.num_workers, cpus)

    line = notice("train=olmo2")
    assert "\n" not in line and line.startswith("train.num_workers=4 data-loader workers per rank")
    assert "SLURM's default of 1" in line and "cluster.cpus_per_task=5" in line, line
    assert "cluster.cpus_per_task=2" in notice("train=olmo2", "cluster.cpus_per_task=2")
    assert notice("train=olmo2", "cluster.cpus_per_task=5") == ""
    assert notice("train=olmo2", "train.num_workers=0") == notice() == ""  # smoke: no workers


def test_gpu_partition_gets_its_gpus_by_default() -> None:
    """GPUs per node follow the partition's GRES (sinfo %G): every GPU and one rank each for
    fsdp, one GPU for dist=single, one per rank with dist.nproc_per_node; none on CPU partitions
    (the default partition here); an explicit hydra.launcher.gpus_per_node or profile value wins."""
    assert [gres_gpus(g) for g in ("gpu:2", "(null)", "gpu:a100:8(S:0-1)", "gpu:4,mps:100",
                                   "mps:100", "gpu:h100:4(S:0),gpu:a100:2(S:1)")] == [2, 0, 8, 4, 0, 6]
    def layout(*o: str) -> tuple:
        p = launcher(*o)
        return p["partition"], p["gpus_per_node"], p["tasks_per_node"]

    assert layout("dist=fsdp", "cluster.partition=gpu") == ("gpu", 8, 8)
    assert layout("dist=hsdp", "hydra.launcher.partition=gpu") == ("gpu", 8, 8)
    assert layout("cluster.partition=gpu") == ("gpu", 1, 1)  # dist=single: one process, one GPU
    assert layout("dist=fsdp", "dist.nproc_per_node=2", "cluster.partition=gpu") == ("gpu", 2, 2)
    assert layout("dist=fsdp") == (None, None, 1)  # default partition: CPU nodes
    assert layout("dist=fsdp", "cluster.partition=debug", "dist.nproc_per_node=2") == ("debug", None, 2)
    assert layout("dist=fsdp", "cluster.partition=gpu", "hydra.launcher.gpus_per_node=4") == ("gpu", 4, 4)
    assert layout("dist=fsdp", "cluster.partition=gpu", "cluster.gpus_per_node=0",
                  "dist.nproc_per_node=2") == ("gpu", 0, 2)


def test_gpu_jobs_are_validated_with_the_jobs_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPUs a job asked for, not this (GPU-less) machine's: more ranks than GPUs is refused,
    and so is what only a GPU host refuses (FSDP2 CPU offload)."""
    for key in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    fsdp = compose_run("dist=fsdp", "dist.nproc_per_node=4", "train.global_batch_size=8",
                       "train.micro_batch_size=2")
    validate_for_layout(fsdp, nodes=1, tasks_per_node=4, kind="slurm", gpus_per_node=4)
    with pytest.raises(ConfigError) as err:
        validate_for_layout(fsdp, nodes=1, tasks_per_node=4, kind="slurm", gpus_per_node=2)
    assert err.value.key == "dist.nproc_per_node" and "gpus_per_node=0" in str(err.value)
    offload = compose_run("dist=fsdp", "dist.nproc_per_node=2", "dist.cpu_offload=true")
    validate_for_layout(offload, nodes=1, tasks_per_node=2, kind="slurm")  # CPU nodes: fine
    with pytest.raises(ConfigError) as err:
        validate_for_layout(offload, nodes=1, tasks_per_node=2, kind="slurm", gpus_per_node=2)
    assert err.value.key == "dist.cpu_offload"


PROFILE = """partition: gpu
timeout_min: 17
mem_gb: 3
setup:
  - module load cuda/12.4
  - source ~/venvs/olmo/bin/activate
"""


def test_cluster_profile_is_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """cluster/default.yaml in the user's config dir: every SLURM command picks it up; cluster=NAME
    picks another; a key on the command line still wins."""
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "default.yaml").write_text(PROFILE)
    (tmp_path / "cluster" / "big.yaml").write_text("partition: big\naccount: proj7\n")
    monkeypatch.setenv("OLMO_EXP_CONFIG_DIR", str(tmp_path))
    for command in (["model=gqa_3kv", "dist=fsdp"], ["model.n_kv_heads=1"],
                    ["dist=hsdp", "dist.nodes=2"]):
        p = launcher(*command)
        assert (p["partition"], p["timeout_min"], p["mem_gb"]) == ("gpu", 17, 3), command
        assert compose(command).cluster.setup == ["module load cuda/12.4",
                                                  "source ~/venvs/olmo/bin/activate"]
    assert launcher("hydra.launcher.timeout_min=5")["timeout_min"] == 5
    big = launcher("cluster=big")
    assert (big["partition"], big["account"], big["timeout_min"]) == ("big", "proj7", 60)
    # --help names the profile in use and what it sets
    from olmo_exp.cli.usage import answer_help

    assert answer_help("run", ["--help"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Cluster"))
    assert line == (f"Cluster profile (SLURM): default ({tmp_path}/cluster/default.yaml): "
                    "partition=gpu mem_gb=3 timeout_min=17 signal_delay_s=120 "
                    "setup=['module load cuda/12.4', 'source ~/venvs/olmo/bin/activate']"), line
    monkeypatch.setenv("OLMO_EXP_CONFIG_DIR", str(tmp_path / "none"))  # no profile: defaults
    assert launcher()["partition"] is None and launcher()["timeout_min"] == 60
    assert answer_help("run", ["--help"])
    assert "Cluster profile (SLURM): none; write" in capsys.readouterr().out


def test_points_are_validated_with_their_job_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    fsdp = compose_run("dist=fsdp", "dist.nodes=2", "dist.nproc_per_node=4",
                       "train.global_batch_size=16", "train.micro_batch_size=2")
    validate_for_layout(fsdp, nodes=2, tasks_per_node=4, kind="slurm")  # 8 ranks: valid there
    with pytest.raises(ConfigError) as err:
        fsdp.validate()  # ... but not as one process on this machine
    assert err.value.key == "dist.nodes"
    with pytest.raises(ConfigError) as err:  # 8 x 2 per rank does not divide 4
        validate_for_layout(compose_run("dist=fsdp", "train.global_batch_size=4",
                                        "train.micro_batch_size=2", "dist.nodes=2"),
                            nodes=2, tasks_per_node=4, kind="slurm")
    assert err.value.key == "train.global_batch_size"
    with pytest.raises(ConfigError) as err:
        validate_for_layout(fsdp, nodes=2, tasks_per_node=4, kind="local")
    assert err.value.key == "dist.nodes" and "hydra/launcher=slurm" in str(err.value)
    with pytest.raises(ConfigError) as err:  # tasks_per_node forced to 2 under dist=single
        validate_for_layout(compose_run(), nodes=1, tasks_per_node=2, kind="slurm")
    assert err.value.key == "dist.strategy"
    validate_for_layout(compose_run(), nodes=1, tasks_per_node=1, kind="slurm")


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]


@pytest.mark.slow  # starts processes
def test_invalid_point_stops_the_sweep_before_submission(tmp_path: Path) -> None:
    proc = cli("-m", "hydra/launcher=local", "model.n_kv_heads=4,5", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        "error: sweep point #1 (model.n_kv_heads=5): model.n_kv_heads=5 is invalid: must divide "
        "model.n_heads=8; valid: [1, 2, 4, 8]"
    ]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no multirun/, no job started


@pytest.mark.slow  # starts processes
def test_slurm_without_sbatch_is_one_line(tmp_path: Path) -> None:
    # PATH without SLURM's tools, as on a laptop; python itself is called by its full path.
    proc = cli("-m", "hydra/launcher=slurm", "model.n_kv_heads=1,2", cwd=tmp_path,
               env={"PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert "sbatch" in line and "hydra/launcher=local" in line
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # starts processes
def test_mixed_partition_refused_before_submission(tmp_path: Path) -> None:
    """The command line on a cluster whose sinfo prints a partition of GPU and CPU-only nodes (a
    stand-in sinfo printing those lines; an sbatch that would fail the test if it ran): one line,
    exit 2, nothing submitted, no sweep dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\ncat <<'EOF'\n{SINFO_OUT}EOF\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path}/sbatch-ran\nexit 1\n")
    for tool in ("sinfo", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    proc = cli("-m", "hydra/launcher=slurm", "cluster.partition=mixed", "train.seed=1,2",
               cwd=cwd, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert line.startswith("error: cluster.partition='mixed' is invalid: has nodes with "
                           "different GPUs (gpu[017-020]: gpu:h100:8(S:0-1)"), line
    assert "Traceback" not in proc.stderr
    assert list(cwd.iterdir()) == [] and not (tmp_path / "sbatch-ran").exists()


@pytest.mark.slow  # starts processes
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs SLURM's sbatch on PATH")
def test_refused_submission_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """sbatch present but the cluster unusable (here: an empty configuration, which sbatch refuses
    at once; a missing one makes it retry for a minute): its own reason in one line, exit 2, and no
    sweep dir (submitit's .submitit/ and the report's files included)."""
    (tmp_path / "slurm.conf").write_text("")
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = cli("-m", "hydra/launcher=slurm", "model.n_kv_heads=1,2", cwd=cwd,
               env={"SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert line.startswith("error: submission failed: sbatch: "), line
    assert "Traceback" not in proc.stderr
    assert list(cwd.iterdir()) == []


@pytest.mark.slow  # starts processes
def test_launcher_without_multirun_is_a_hint(tmp_path: Path) -> None:
    proc = cli("hydra/launcher=slurm", "dry_run=true", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert line.startswith("error: hydra/launcher='slurm' is invalid") and "-m" in line
    assert list(tmp_path.iterdir()) == []  # the run dir Hydra made is gone


# -- slow: real jobs through submitit's local executor ---------------------------------------------


def _task_pids(sweep: Path, holding: Path) -> list[int]:
    """submitit task processes of this sweep with a file open under ``holding`` (its run dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"submitit.core._submit" not in cmd or str(sweep).encode() not in cmd:
                continue
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(f.startswith(f"{holding}/") for f in fds):
            pids.append(int(proc.name))
    return pids


def _write_corpus(path: Path, docs: int = 300) -> None:
    """A small deterministic English-like corpus (jsonl), enough for a BPE and a few steps."""
    import json
    import random

    words = ("the of and to in is was for on that with as by at from his her an were which "
             "city river music school war king team film game station world water light").split()
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(docs):
            text = " ".join(rng.choice(words) for _ in range(120)).capitalize() + "."
            f.write(json.dumps({"text": text}) + "\n")


@pytest.mark.slow
def test_local_sweep_survives_a_failed_job_and_a_requeue(data_dir: Path, tmp_path: Path) -> None:
    """3 jobs through submitit's local executor: #0 trains; #1 fails at run time (its data file is
    not jsonl, which only preparation finds); #2, the same run as #0, gets the time-limit signal
    mid-training, checkpoints that step, is requeued, resumes and ends with #0's per-step losses."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    _write_corpus(good)
    bad.write_text("this is not json\n")
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}", f"data.output_dir={data_dir}",
            *TINY, *PLAIN, "train.max_steps=10", "data=files", "data.tokenizer=bpe", "data.bpe_vocab_size=512",
            f"data.path={good},{bad},{good}", "train.eval_interval=4", "train.eval_tokens=128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Job #2's task gets USR2 once it has logged step 5, as at submitit's time limit: it stops at
    # a step off the evaluation schedule (6 or 7).
    metrics = sweep / "2" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and any(r["step"] >= 5 for r in read_jsonl(metrics)):
            break
        time.sleep(0.1)
    pids = _task_pids(sweep, holding=sweep / "2")
    assert pids, "job #2 is not running"
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, err[-4000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert line.startswith("error: job #1 [") and f"data.path={bad}" in line, line
    assert line.split("): ", 1)[1].startswith(  # its cause, as data prep words it
        f"data file {bad}, line 1: not valid JSON"), line
    assert "(FAILED)" in line and " | log: " in line, line
    assert Path(line.rsplit(" | log: ", 1)[1]).is_file()
    # The sweep report says so too, from the run dirs alone (the rejected run removed its own).
    with open(sweep / "report.csv") as f:
        rows = {int(r["job"]): r for r in csv.DictReader(f)}
    assert rows[1]["status"] == "failed", rows[1]
    assert rows[1]["error"].startswith(f"data file {bad}, line 1: not valid JSON"), rows[1]
    assert rows[0]["status"] == rows[2]["status"] == "finished", rows
    assert "Traceback" not in err
    assert "(requeued 1x)" in out + err
    # The interrupted run checkpointed the step it stopped at, resumed from it, and its metrics
    # (one record per step) equal the uninterrupted run's.
    # submitit logs INFO to the task's stdout log, WARNING and up to its stderr log as well.
    (log2,) = [p for p in (sweep / ".submitit").glob("*/*_0_log.out") if "requeuing" in p.read_text()]
    text = log2.read_text()
    stop = re.search(r"saved a checkpoint at step (\d+); requeuing", text)
    assert stop
    resumed = f"resuming at step {stop[1]} of 10 from"  # the console's line for a loaded checkpoint
    assert "Requeued job" in text and resumed in text
    assert text.index("Requeued job") < text.index(resumed)
    assert losses(sweep / "2") == losses(sweep / "0")
    # Evaluations on their schedule only (every 4 steps and at the end), not at the stop as well.
    for job in (0, 2):
        evaluated = [r["step"] for r in read_jsonl(sweep / str(job) / "metrics.jsonl")
                     if any(k.startswith("eval/") for k in r)]
        assert evaluated == [4, 8, 10], (job, evaluated)
    # Retention spans attempts: the newest train.keep_last_checkpoints (3) of both attempts' saves.
    kept = sorted(int(p.name[4:]) for p in (sweep / "2" / "checkpoints").glob("step*"))
    assert kept == sorted({3, 6, int(stop[1]), 9, 10})[-3:], kept
    assert sorted(losses(sweep / "0")) == list(range(1, 11))


@pytest.mark.slow  # starts processes
def test_wandb_run_id_is_per_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sweeps' job #0 never share a wandb run; a requeued job (same run dir) continues its own,
    rewound to the step its checkpoint restored (offline wandb: the server-side rewind itself is
    not observable here, the run's resume_from setting is)."""
    from types import SimpleNamespace

    from olmo_exp.config.wandb import WandbConfig, WandbMode
    from olmo_exp.runtime.callbacks import WandbLogCallback

    monkeypatch.setenv("WANDB_SILENT", "true")
    config = WandbConfig(enabled=True, mode=WandbMode.offline, group="multirun/sweep-a")
    ids, settings = [], []
    # a/0 starts, logs steps 1-5, crashes; its next attempt resumed the checkpoint of step 3.
    for run_dir, step in ((tmp_path / "a" / "0", 0), (tmp_path / "a" / "0", 3),
                          (tmp_path / "b" / "0", 0)):
        run_dir.mkdir(parents=True, exist_ok=True)
        callback = WandbLogCallback(config=config, run_dir=run_dir, run_name=run_dir.name)
        callback.trainer = SimpleNamespace(global_step=step)  # after olmo-core loaded a checkpoint
        callback.pre_train()
        ids.append(callback._run.id)
        settings.append(callback._run.settings)
        assert callback._run.group == "multirun/sweep-a"
        if step == 0 and run_dir.parent.name == "a":
            for logged in range(1, 6):
                callback.log_metrics(logged, {"train/CE loss": 1.0 / logged})
        callback.close()
    assert ids[0] == ids[1] != ids[2]
    assert (tmp_path / "a" / "0" / "wandb_run_id").read_text() == ids[0]
    # The resumed attempt rewinds the wandb run to the restored step (steps 4-5 get replaced).
    assert settings[0].resume == "allow" and settings[0].resume_from is None
    rewind = settings[1].resume_from
    assert (rewind.run, rewind.metric, rewind.value) == (ids[0], "_step", 3)
    assert settings[2].resume_from is None


def test_a_failed_jobs_cause_is_never_a_peers_echo() -> None:
    """One list of echoes (launch.is_echo) for the spawn failure line and the SLURM job line."""
    from olmo_exp.runtime.launch import is_echo
    from olmo_exp.sweep.failures import root_cause as _root_cause

    real = "ValueError: model.d_model is not what the checkpoint holds"
    for echo in ("RuntimeError: Connection closed by peer [127.0.0.1]:29500",
                 "DistBackendError: NCCL communicator was aborted", "killed by SIGINT"):
        assert is_echo(echo)
        assert _root_cause([(0, echo), (1, real)]) == (1, real)
    assert not is_echo(real)
    assert _root_cause([(1, "killed by SIGTERM")]) == (1, "killed by SIGTERM")  # only echoes: the first
