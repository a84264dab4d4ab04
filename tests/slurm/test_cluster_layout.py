"""The layout ``tests/slurm/cluster.sh up`` promises: a GPU partition without devices, 2-node jobs.

Partition ``gpu`` (nodes gpu1, gpu2, each GRES gpu:2 backed by no device) schedules jobs asking
``--gpus-per-node=2``; a ``-N 2`` job there runs one task per node, and the tasks meet over TCP
at the first node's name (``MASTER_ADDR``), as torch.distributed does on a real cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

ALL_REDUCE = """
import os, socket, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(os.environ["SLURM_NODEID"], os.environ["SLURMD_NODENAME"], os.environ["MASTER_ADDR"],
      socket.gethostbyname(os.environ["MASTER_ADDR"]), int(t.item()), flush=True)
dist.destroy_process_group()
"""


def sh(cmd: str, timeout: float = 120) -> str:
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\nrc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module", autouse=True)
def gpu_partition() -> None:
    try:
        proc = subprocess.run(["sinfo", "-h", "-p", "gpu", "-o", "%G"], capture_output=True,
                              text=True, timeout=30)
        problem = None if proc.stdout.strip() else f"no partition gpu ({proc.stderr.strip()})"
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        problem = repr(e)
    if problem:
        message = f"no SLURM cluster with partition gpu: {problem}; `bash tests/slurm/cluster.sh up`"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def test_partitions_show_their_gpus() -> None:
    partitions = dict(line.split() for line in sh("sinfo -h -o '%P %G'").splitlines())
    assert partitions == {"debug*": "(null)", "gpu": "gpu:2"}


def test_partition_gpus_reads_this_clusters_sinfo() -> None:
    """The launcher's default GPUs come from the real sinfo output of this cluster."""
    from olmo_exp.config.cluster import SINFO_FORMAT, parse_sinfo, partition_gpus, sinfo_groups

    sinfo_groups.cache_clear()
    groups = parse_sinfo(sh(f"sinfo -h -o '{SINFO_FORMAT}'"))
    assert {(g.partition, g.default, g.gpus) for g in groups} == {("debug", True, 0), ("gpu", False, 2)}
    assert (partition_gpus(None), partition_gpus("debug"), partition_gpus("gpu")) == (0, 0, 2)


def test_gpu_job_runs_without_a_device() -> None:
    out = sh("srun -p gpu --gpus-per-node=2 --mem=1G -t 2 bash -c "
             "'echo $SLURMD_NODENAME $SLURM_GPUS_ON_NODE ${CUDA_VISIBLE_DEVICES-unset}'")
    node, gpus, cuda = out.split()
    assert node in {"gpu1", "gpu2"} and gpus == "2" and cuda == "unset", out


def test_two_node_job_meets_at_the_first_node(tmp_path) -> None:
    (tmp_path / "all_reduce.py").write_text(ALL_REDUCE)
    (tmp_path / "job.sh").write_text(f"""#!/bin/bash
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
export MASTER_PORT=29533 WORLD_SIZE=$SLURM_NTASKS OMP_NUM_THREADS=1
srun bash -c 'RANK=$SLURM_PROCID exec {sys.executable} all_reduce.py'
""")
    sh(f"cd {tmp_path} && sbatch --wait -p gpu -N 2 --ntasks-per-node=1 --mem=2G -t 5 -o out "
       "job.sh", timeout=300)
    out = (tmp_path / "out").read_text()
    rows = sorted(line.split() for line in out.splitlines() if line.strip())
    # world 2: 1 + 2 = 3 on both ranks; MASTER_ADDR is gpu1, which resolves on both nodes
    assert rows == [["0", "gpu1", "gpu1", "127.0.0.1", "3"],
                    ["1", "gpu2", "gpu1", "127.0.0.1", "3"]], out
