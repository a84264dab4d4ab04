"""How long a SLURM job of the default run takes from its time-limit signal to its requeue.

    python tests/slurm/requeue_time.py [OVERRIDE ...]     # on a cluster (tests/slurm/cluster.sh up)

Submits ``python run.py -m hydra/launcher=slurm`` (the default model, data and train settings, plus
the overrides given), waits until the job has trained a few steps, sends it the time-limit signal
as SLURM does (``scancel --signal=USR2``: every task of the job), and polls ``scontrol`` until the
job is requeued. Prints the seconds from the signal to the requeue, beside ``signal_delay_s``
(the grace time before the kill), then cancels the sweep. The requeued attempt is not waited for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIGNAL_DELAY_S = 120  # conf/cluster: the default grace time


def job_fields(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True,
                         timeout=60).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out))


def main(overrides: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="requeue-time-"))
    sweep_dir = work / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    args = [sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=slurm",
            f"hydra.sweep.dir={sweep_dir}", *overrides]
    with open(work / "sweep.log", "w") as log:
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    metrics = sweep_dir / "0" / "metrics.jsonl"
    try:
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
            if proc.poll() is not None:
                sys.exit(f"the sweep ended before training: see {work / 'sweep.log'}")
            time.sleep(0.5)
        queue = subprocess.run(["squeue", "-h", "-o", "%A|%Z"], capture_output=True, text=True,
                               timeout=60).stdout.splitlines()
        (job,) = [line.split("|")[0] for line in queue if line.split("|")[1] == str(work)]
        step = json.loads(metrics.read_text().splitlines()[-1])["step"]
        signalled = time.monotonic()
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
        while int(job_fields(job).get("Restarts", "0")) == 0:
            if time.monotonic() - signalled > 600:
                sys.exit(f"job {job} not requeued within 600 s: see {work}")
            time.sleep(0.1)
        took = time.monotonic() - signalled
        print(f"job {job} (signalled after step {step}): requeued {took:.1f} s after the signal "
              f"(signal_delay_s {SIGNAL_DELAY_S}); {time.strftime('%Y-%m-%d')}; logs: {work}")
    finally:
        proc.kill()
        for line in subprocess.run(["squeue", "-h", "-o", "%A|%Z"], capture_output=True,
                                   text=True, timeout=60).stdout.splitlines():
            if line.split("|")[1] == str(work):
                subprocess.run(["scancel", line.split("|")[0]], check=False, timeout=60)


if __name__ == "__main__":
    main(sys.argv[1:])
