"""Sweeps through real ``sbatch`` on a single-node SLURM cluster (``tests/slurm/cluster.sh up``).

Every test here is marked ``slurm`` and ``slow``. Without a reachable cluster (``sinfo`` fails)
they skip, saying how to start one; with ``CI=true`` a missing cluster fails them instead.

To keep the wall time to a few minutes on 2 cores, the module fixture ``sweeps`` prepares the data
once and then starts every sweep at the same time; each test waits for its own. The sweeps share
their reference runs:
- the 2 x 2 grid's point (n_kv_heads=3, qkv 0.5->1.0) is the 1-process run the FSDP job must match;
- the crash sweep's point #0 is the uninterrupted run the requeued job must match.

The time-limit test uses SLURM's own time limit: once its job has trained a step, its training
process is frozen (SIGSTOP) and the limit lowered (``scontrol update TimeLimit``), so that
slurmctld sends ``--signal=USR2@signal_delay_s`` at its next check, exactly as near a real limit;
slurmstepd sends the frozen task SIGCONT with the signal, and only then does it train on. So the
job cannot finish before its signal, however fast the machine. The limit is raised again once the
job is requeued so that the resumed attempt can finish. (A job started with a 1-minute limit gets
the signal 10-40 s after it starts, whether or not it has trained a step yet on a loaded machine.)

``-k`` starts only the sweeps the selected tests read (``SWEEPS_READ``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, TINY, losses
from test_dist import assert_same_losses

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_HINT = "start one with `bash tests/slurm/cluster.sh up` (as root, Debian 12)"

# Small enough that many jobs share 2 cores; FSDP-compatible (global batch 4 = 2 ranks x 2).
SMALL = [*TINY, "model.d_model=64", "model.n_layers=2", "model.n_heads=4"]
# The 2 x 2 sweep of the design: LWS attention scalars x KV heads, on a small GQA model. Per
# layer (query heads, KV heads): (4,1),(12,3) / (3,1),(12,4) / (8,2),(12,3) / (6,2),(12,4). (With
# 1 KV head the 12 query heads form one group, so the qkv scalars could not change anything.)
GRID_MODEL = ["model=gqa_3kv", "model/lws=openelm", "model.d_model=96", "model.n_layers=2"]
GRID_SWEEP = ["model.lws.qkv_scalars=[0.25,1.0],[0.5,1.0]", "model.n_kv_heads=3,4"]
# The grid point the FSDP job repeats on 2 ranks.
FSDP_POINT = ["model.lws.qkv_scalars=[0.5,1.0]", "model.n_kv_heads=3"]
# Long enough for the crash test's kill to land while the job trains.
LONG_STEPS = 150
LONG = [*SMALL, f"train.max_steps={LONG_STEPS}", "train.checkpoint_interval=1000"]
# Every job asks for little so that they share the node (the tiny runs need far less).
JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
TIMEOUT_MIN = 10  # until the test lowers it
PROFILE = """partition: gpu
timeout_min: 7
setup:
  - export OLMO_PROFILE_SETUP=ran
"""
SIGNAL_DELAY_S = 120  # >= any lowered remaining time: the signal comes at slurmctld's next check


@functools.cache
def cluster_problem() -> str | None:
    """None when ``sinfo`` answers with a usable node, else what is wrong (asked once)."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        return "sinfo not found: the SLURM client is not installed"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"sinfo exited {proc.returncode}: {last}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no usable node (sinfo: {' '.join(states) or 'none'})"
    return None


def require_cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    message = f"no SLURM cluster reachable ({problem}); {START_HINT}"
    if CI:  # CI brings the cluster up itself: a missing one is a broken CI, not a skip
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def sweep_env() -> dict[str, str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # threads per rank are the launcher's business
    return env


@dataclass
class Sweep:
    """One ``python run.py -m hydra/launcher=slurm ...`` running in the background."""

    name: str
    cwd: Path
    proc: subprocess.Popen
    started: str  # when, as sacct reads it: earlier jobs from a reused directory are not ours
    events: list[str] = field(default_factory=list)  # what the test did to its jobs, and when
    _result: subprocess.CompletedProcess | None = None

    @property
    def dir(self) -> Path:
        return self.cwd / "sweep"

    def run_dir(self, num: int) -> Path:
        return self.dir / str(num)

    def wait(self, timeout: float = 1200) -> subprocess.CompletedProcess:
        if self._result is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sweep {self.name} still running after {timeout}s\n"
                                     f"{self.describe()}") from None
            self._result = subprocess.CompletedProcess(
                self.proc.args, self.proc.returncode, (self.cwd / "stdout").read_text(),
                (self.cwd / "stderr").read_text())
        return self._result

    def describe(self) -> str:
        out = (self.cwd / "stdout").read_text()[-3000:]
        err = (self.cwd / "stderr").read_text()[-6000:]
        return f"--- {self.name} events: {self.events}\n--- stdout\n{out}\n--- stderr\n{err}"

    def job_logs(self) -> dict[str, str]:
        """submitit's per-task logs (stdout + stderr) by file name."""
        return {p.name: p.read_text(errors="replace")
                for p in sorted((self.dir / ".submitit").glob("*/*_log.*"))}

    def slurm_jobs(self) -> list[dict[str, str]]:
        """This sweep's jobs in SLURM's accounting: one row per attempt of each array element."""
        return accounting_jobs(self.cwd, self.started)


def accounting_jobs(workdir: Path, since: str, settle_s: float = 60) -> list[dict[str, str]]:
    """Jobs submitted from ``workdir`` since then, once accounting has their end (it lags)."""
    fields = ["JobID", "JobIDRaw", "State", "ExitCode", "WorkDir"]
    deadline = time.monotonic() + settle_s
    while True:
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-D", "-S", since, "-o", ",".join(fields)],
            capture_output=True, text=True, check=True, timeout=60)
        rows = [dict(zip(fields, line.split("|"), strict=False))
                for line in proc.stdout.splitlines() if line.strip()]
        rows = [r for r in rows if Path(r.get("WorkDir", "")) == workdir]
        last = {r["JobID"]: r["State"] for r in rows}
        if time.monotonic() > deadline or not any(
                s in {"PENDING", "RUNNING", "COMPLETING"} for s in last.values()):
            return rows


def queued_jobs(workdir: Path) -> list[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%A|%K|%T|%Z"], capture_output=True, text=True,
                          check=True, timeout=60)
    return [line for line in proc.stdout.splitlines() if line.split("|")[-1] == str(workdir)]


def running_job_id(workdir: Path, array_index: int, timeout: float = 900) -> str:
    """The raw SLURM job id of one array element of the sweep started in ``workdir``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in queued_jobs(workdir):
            raw, index, state, _ = line.split("|")
            if index in (str(array_index), "N/A" if array_index == 0 else "") and state == "RUNNING":
                return raw
        time.sleep(1)
    raise AssertionError(f"no running job #{array_index} from {workdir} within {timeout}s")


def wait_for_steps(run_dir: Path, steps: int, timeout: float = 900) -> None:
    """Until the run's metrics.jsonl records training step ``steps`` (step 0 is the start)."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) > steps:
            return
        time.sleep(0.5)
    raise AssertionError(f"{metrics}: fewer than {steps} records after {timeout}s")


def job_field(job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    match = re.search(rf"\b{key}=(\S+)", out)
    assert match, (key, out)
    return match.group(1)


def seconds(slurm_time: str) -> int:
    """[D-]HH:MM:SS or MM:SS -> seconds."""
    days, _, clock = slurm_time.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def training_pids(sweep: Sweep, num: int) -> tuple[str, list[int]]:
    """Job #num's id and its training processes (the tasks of its step 0: the ranks)."""
    job = running_job_id(sweep.cwd, num)
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    # PID JOBID STEPID LOCALID GLOBALID: the tasks of step 0 are the ranks (python processes)
    pids = [int(cols[0]) for cols in (line.split() for line in out.splitlines()[1:])
            if len(cols) >= 3 and cols[2] == "0"]
    assert pids, out
    return job, pids


def kill_a_training_task(sweep: Sweep, num: int) -> None:
    """SIGKILL job #num's training process once it has trained a step (as the OOM killer would)."""
    wait_for_steps(sweep.run_dir(num), 1)
    job, pids = training_pids(sweep, num)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    sweep.events.append(f"killed job {job} (#{num}) pids {pids}")


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # a short-lived child of the task, gone


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP); a gone one counts as not."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return re.search(r"^State:\s*T\b", status, re.MULTILINE) is not None


def cut_the_time_limit(sweep: Sweep) -> None:
    """Freeze job #0 once it trains and lower its time limit: SLURM's signal (USR2 with a SIGCONT)
    lets it go on, so it cannot have finished before; raise the limit again on requeue."""
    wait_for_steps(sweep.run_dir(0), 1)
    job, pids = training_pids(sweep, 0)
    signal_all(pids, signal.SIGSTOP)
    try:
        ran = seconds(job_field(job, "RunTime"))
        limit_min = math.ceil(ran / 60) + 2  # 2-3 min left: below signal_delay_s, so signalled now
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}"],
                       check=True, timeout=60)
        sweep.events.append(f"job {job}: frozen, time limit {limit_min} min after {ran}s")
        deadline = time.monotonic() + 300
        # slurmstepd sends a stopped task SIGCONT with the signal: the task runs again then.
        while all(stopped(pid) for pid in pids):
            if time.monotonic() > deadline:
                sweep.events.append("no signal from SLURM within 300s")
                return
            time.sleep(0.05)
        sweep.events.append(f"job {job}: signalled by SLURM after {seconds(job_field(job, 'RunTime'))}s")
    finally:
        signal_all(pids, signal.SIGCONT)
    let_go = time.monotonic()
    deadline = let_go + 600
    while int(job_field(job, "Restarts")) == 0:
        if time.monotonic() > deadline:
            sweep.events.append("no requeue within 600s")
            return
        time.sleep(0.5)
    requeued_after = time.monotonic() - let_go
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={TIMEOUT_MIN}"],
                   check=True, timeout=60)
    sweep.events.append(f"job {job}: requeued {requeued_after:.1f}s after the signal reached it; "
                        f"time limit back to {TIMEOUT_MIN} min")


def in_background(sweep: Sweep, action) -> threading.Thread:
    def run() -> None:
        try:
            action(sweep)
        except Exception as e:  # reported by the test through sweep.events
            sweep.events.append(f"{action.__name__} failed: {type(e).__name__}: {e}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def start_sweep(name: str, root: Path, data_dir: Path, *overrides: str,
                env: dict[str, str] | None = None) -> Sweep:
    cwd = root / name
    cwd.mkdir(parents=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    args = [sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=slurm",
            f"data.output_dir={data_dir}", f"hydra.sweep.dir={cwd / 'sweep'}", *JOB, *overrides]
    with open(cwd / "stdout", "w") as out, open(cwd / "stderr", "w") as err:
        proc = subprocess.Popen(args, cwd=cwd, env={**sweep_env(), **(env or {})}, stdout=out,
                                stderr=err, text=True)
    return Sweep(name, cwd, proc, started)



def grid_reference(sweeps: dict) -> Path:
    """The grid sweep's run of the FSDP point's settings as one process: the losses a multi-rank
    job of the same settings must reproduce."""
    grid = sweeps["grid"]
    assert grid.wait().returncode == 0, grid.describe()
    (reference,) = [grid.run_dir(n) for n in range(4) if all(
        o in (grid.run_dir(n) / ".hydra" / "overrides.yaml").read_text() for o in FSDP_POINT)]
    return reference

# The sweeps each test reads (the fixture starts those of the selected tests; unknown: all).
SWEEPS_READ = {
    "test_grid_sweep_is_four_jobs": {"grid"},
    "test_fsdp_job_is_one_two_rank_run": {"fsdp", "grid"},
    "test_crashed_job_fails_the_sweep_not_the_others": {"crash"},
    "test_time_limit_requeues_and_resumes_losing_nothing": {"timeout", "crash"},
    "test_gpu_partition_gets_its_gpus_and_a_rank_each": {"gpu_default"},
    "test_cpu_partition_gets_no_gpus": {"cpu_default"},
    "test_two_node_hsdp_job_trains_like_one_process": {"hsdp_2node", "grid"},
}
ALL_SWEEPS = set().union(*SWEEPS_READ.values())


@pytest.fixture(scope="module")
def sweeps(data_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest):
    """All sweeps of this module, started together (the data prepared once, before)."""
    require_cluster()
    prep = subprocess.run([sys.executable, "-m", "olmo_exp.data", f"data.output_dir={data_dir}",
                           *SMALL], cwd=REPO, env=sweep_env(), capture_output=True, text=True,
                          timeout=900)
    assert prep.returncode == 0, prep.stderr[-4000:]
    root = tmp_path_factory.mktemp("slurm")
    # A cluster profile written once (partition gpu, time limit, setup line), used by two commands.
    profile = root / "user-config"
    (profile / "cluster").mkdir(parents=True)
    (profile / "cluster" / "default.yaml").write_text(PROFILE)
    with_profile = {"OLMO_EXP_CONFIG_DIR": str(profile)}
    started = time.monotonic()
    wanted = set().union(*(SWEEPS_READ.get(item.originalname, set(ALL_SWEEPS))
                           for item in request.session.items if item.module is request.module))
    starts = {
        "grid": lambda: start_sweep("grid", root, data_dir, *TINY, *GRID_MODEL, *GRID_SWEEP),
        "fsdp": lambda: start_sweep("fsdp", root, data_dir, *TINY, *GRID_MODEL, *FSDP_POINT, "dist=fsdp",
                                    "dist.nproc_per_node=2", "hydra.launcher.gpus_per_node=0"),
        # #0 is the uninterrupted run for the time-limit test; #1 gets killed while it trains
        "crash": lambda: start_sweep("crash", root, data_dir, *LONG, "train.seed=42,7"),
        "timeout": lambda: start_sweep("timeout", root, data_dir, *LONG, "train.seed=42",
                                       f"hydra.launcher.timeout_min={TIMEOUT_MIN}",
                                       f"hydra.launcher.signal_delay_s={SIGNAL_DELAY_S}",
                                       "hydra.launcher.max_num_timeout=2"),
        # Dry runs (validation and the model table in every task, no training): the profile's
        # GPU partition, GPUs not asked for; the same profile on the CPU partition.
        "gpu_default": lambda: start_sweep("gpu_default", root, data_dir, *SMALL, "dist=fsdp",
                                           "dry_run=true", env=with_profile),
        "cpu_default": lambda: start_sweep("cpu_default", root, data_dir, *SMALL, "dist=fsdp",
                                           "dry_run=true", "cluster.partition=debug", env=with_profile),
        # Two nodes of partition gpu, one rank each: HSDP with one replica per node.
        "hsdp_2node": lambda: start_sweep("hsdp_2node", root, data_dir, *TINY, *GRID_MODEL, *FSDP_POINT,
                                          "dist=hsdp", "dist.nodes=2", "dist.nproc_per_node=1",
                                          "cluster.partition=gpu"),
    }
    running = {name: start() for name, start in starts.items() if name in wanted}
    actions = {"crash": lambda s: kill_a_training_task(s, 1), "timeout": cut_the_time_limit}
    threads = [in_background(running[name], action) for name, action in actions.items()
               if name in running]
    yield running
    for sweep in running.values():
        if sweep.proc.poll() is None:
            sweep.proc.kill()
        for line in queued_jobs(sweep.cwd):
            subprocess.run(["scancel", line.split("|")[0]], check=False, timeout=60)
    for thread in threads:
        thread.join(timeout=1)
    print(f"SLURM sweeps: {time.monotonic() - started:.0f}s wall")


def assert_finished(run_dir: Path, max_steps: int) -> dict[int, float]:
    got = losses(run_dir)
    assert sorted(got) == list(range(1, max_steps + 1)), (run_dir, sorted(got))
    assert all(math.isfinite(v) for v in got.values()), got
    return got


def ran_under_sbatch(sweep: Sweep, expected_jobs: int) -> None:
    """Each point was a real SLURM job: an sbatch script, in accounting, its tasks started by it."""
    jobs = {job["JobID"] for job in sweep.slurm_jobs()}
    assert len(jobs) == expected_jobs, sweep.slurm_jobs()
    scripts = list((sweep.dir / ".submitit").glob("*/*_submission.sh"))
    assert scripts and all("#SBATCH" in p.read_text() for p in scripts), scripts
    logs = "\n".join(sweep.job_logs().values())
    started = set(re.findall(r"Starting with JobEnvironment\(job_id=([^,]+),", logs))
    assert started == jobs, (started, jobs)


# -- the tests ------------------------------------------------------------------------------------


def test_invalid_sweep_point_queues_nothing(data_dir: Path, tmp_path: Path) -> None:
    """model.n_kv_heads=5 does not divide 12 heads: one line naming it, exit 2, no job, no dir."""
    require_cluster()
    sweep = start_sweep("invalid", tmp_path, data_dir, *TINY, "model=gqa_3kv",
                        "model.n_kv_heads=3,5")
    result = sweep.wait(timeout=300)
    assert result.returncode == 2, sweep.describe()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.n_kv_heads=5" in errors[0], sweep.describe()
    assert "Traceback" not in result.stderr
    assert queued_jobs(sweep.cwd) == [] and sweep.slurm_jobs() == []
    assert not sweep.dir.exists() and not (sweep.cwd / "multirun").exists()


def test_grid_sweep_is_four_jobs(sweeps: dict[str, Sweep]) -> None:
    """LWS scalars x KV heads: 4 SLURM jobs, 4 run dirs, each trained with its own metrics."""
    sweep = sweeps["grid"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    ran_under_sbatch(sweep, 4)
    runs = [assert_finished(sweep.run_dir(n), 6) for n in range(4)]
    layers = {json.dumps(json.loads((sweep.run_dir(n) / "model_summary.json").read_text())["layers"])
              for n in range(4)}
    assert len(layers) == 4  # four different models, not one run four times
    assert len({tuple(r.values()) for r in runs}) == 4  # and four different loss curves


def test_fsdp_job_is_one_two_rank_run(sweeps: dict[str, Sweep]) -> None:
    """tasks_per_node=2 on CPU/gloo: one run dir, 2 ranks, the 1-process run's losses."""
    sweep = sweeps["fsdp"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    ran_under_sbatch(sweep, 1)
    run_dir = sweep.run_dir(0)
    assert [p.name for p in sweep.dir.iterdir() if p.is_dir() and p.name != ".submitit"] == ["0"]
    task_logs = [name for name in sweep.job_logs() if name.endswith("_log.out")]
    assert len(task_logs) == 2, task_logs  # one per rank
    assert_same_losses(assert_finished(run_dir, 6), assert_finished(grid_reference(sweeps), 6),
                       list(range(1, 7)))


def test_crashed_job_fails_the_sweep_not_the_others(sweeps: dict[str, Sweep]) -> None:
    """A training process killed hard: the other job finishes; the failure is named; exit != 0."""
    sweep = sweeps["crash"]
    result = sweep.wait()
    assert any(e.startswith("killed job") for e in sweep.events), sweep.describe()
    assert result.returncode != 0, sweep.describe()
    assert_finished(sweep.run_dir(0), LONG_STEPS)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "#1" in errors[0] and "train.seed=7" in errors[0], sweep.describe()
    log = re.search(r"log: (\S+)", errors[0])
    assert log and Path(log.group(1)).exists(), errors[0]
    states = {job["JobID"].rpartition("_")[2]: job["State"] for job in sweep.slurm_jobs()}
    assert len(states) == 2, sweep.slurm_jobs()
    assert states.get("0") == "COMPLETED" and states.get("1") != "COMPLETED", states


def test_time_limit_requeues_and_resumes_losing_nothing(sweeps: dict[str, Sweep]) -> None:
    """SLURM's time-limit signal: checkpoint, requeue, resume; the same losses as uninterrupted."""
    sweep = sweeps["timeout"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    assert any("requeued" in e for e in sweep.events), sweep.describe()
    attempts = [job["State"] for job in sweep.slurm_jobs()]  # SLURM's record of each attempt
    assert attempts[-1] == "COMPLETED" and "REQUEUED" in attempts, sweep.slurm_jobs()
    logs = "\n".join(sweep.job_logs().values())
    assert "Requeued job" in logs, sorted(sweep.job_logs())
    # No periodic checkpoint before step 1000: the requeued attempt resumes from the one saved
    # on the signal, and each step is recorded exactly once (losses() asserts no step twice).
    saved = re.search(r"checkpoint at step (\d+)", logs)
    assert saved and int(saved.group(1)) >= 1, logs[-4000:]
    resumed = assert_finished(sweep.run_dir(0), LONG_STEPS)
    crash = sweeps["crash"]
    crash.wait()
    uninterrupted = assert_finished(crash.run_dir(0), LONG_STEPS)
    assert_same_losses(resumed, uninterrupted, list(range(1, LONG_STEPS + 1)))


def sbatch_lines(sweep: Sweep) -> set[str]:
    """The #SBATCH lines of the sweep's submission script(s)."""
    scripts = list((sweep.dir / ".submitit").glob("*/*_submission.sh"))
    assert scripts, sweep.describe()
    return {line.strip() for p in scripts for line in p.read_text().splitlines()
            if line.startswith("#SBATCH") or line.startswith("export OLMO_PROFILE_SETUP")}


def test_gpu_partition_gets_its_gpus_and_a_rank_each(sweeps: dict[str, Sweep]) -> None:
    """The profile's partition gpu (GRES gpu:2) asks for both GPUs and one task per GPU without
    being told; the job's ranks see no CUDA here and validate and run on CPU over gloo."""
    sweep = sweeps["gpu_default"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    lines = sbatch_lines(sweep)
    for want in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --time=7",
                 "export OLMO_PROFILE_SETUP=ran"):  # the profile's setup line, in the script
        assert want in lines, (want, lines)
    assert "gpus_per_node=2" in result.stderr + result.stdout  # the command says what it asked
    dist = json.loads((sweep.run_dir(0) / "model_summary.json").read_text())["dist"]
    assert (dist["world_size"], dist["device"], dist["backend"]) == (2, "cpu", "gloo"), dist


def test_cpu_partition_gets_no_gpus(sweeps: dict[str, Sweep]) -> None:
    sweep = sweeps["cpu_default"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    lines = sbatch_lines(sweep)
    assert "#SBATCH --partition=debug" in lines and "#SBATCH --ntasks-per-node=1" in lines, lines
    assert not any("gpu" in line for line in lines), lines
    assert "#SBATCH --time=7" in lines  # the rest of the profile still applies
    dist = json.loads((sweep.run_dir(0) / "model_summary.json").read_text())["dist"]
    assert (dist["strategy"], dist["world_size"]) == ("fsdp", 1), dist


def test_two_node_hsdp_job_trains_like_one_process(sweeps: dict[str, Sweep]) -> None:
    """-N 2 on partition gpu, one rank per node: HSDP with one replica per node (2 x 1), the ranks
    meeting at the first node; the 1-process run's losses."""
    sweep = sweeps["hsdp_2node"]
    result = sweep.wait()
    assert result.returncode == 0, sweep.describe()
    ran_under_sbatch(sweep, 1)
    lines = sbatch_lines(sweep)
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1",
            "#SBATCH --partition=gpu"} <= lines, lines
    run_dir = sweep.run_dir(0)
    assert "mesh (2, 1) ('dp_replicate', 'dp_shard')" in (run_dir / "train.log").read_text()
    (job,) = {row["JobIDRaw"] for row in sweep.slurm_jobs()}
    nodes = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "NodeList"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert nodes == ["gpu[1-2]"], nodes  # one task on each node
    assert_same_losses(assert_finished(run_dir, 6), assert_finished(grid_reference(sweeps), 6),
                       list(range(1, 7)))
