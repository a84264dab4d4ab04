"""How fast the CLI answers when nothing is trained, side by side with bare Python + Hydra.

    python -m olmo_exp.bench.cli [--repeats 5]

Times, in one invocation and interleaved (so machine load hits every command alike), the median
wall time of: ``python -c "import hydra"`` (the floor: interpreter + Hydra), ``python run.py
--help``, ``python run.py --cfg job`` and a rejected config (``model.n_kv_heads=3``, exit 2). Each
answer is validated before torch or olmo-core is imported; the ratio to the floor is the number to
compare across machines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

# `python -m olmo_exp` is `python run.py` (run.py only calls olmo_exp.__main__.main).
COMMANDS: dict[str, tuple[list[str], int]] = {
    'python -c "import hydra"': (["-c", "import hydra"], 0),
    "run.py --help": (["-m", "olmo_exp", "--help"], 0),
    "run.py --cfg job": (["-m", "olmo_exp", "--cfg", "job"], 0),
    "run.py model.n_kv_heads=3 (rejected)": (["-m", "olmo_exp", "model.n_kv_heads=3"], 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeats):
            for name, (args, expected) in COMMANDS.items():
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True)
                times[name].append(time.perf_counter() - start)
                if proc.returncode != expected:
                    raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr.decode()[-2000:]}")
    floor = statistics.median(times['python -c "import hydra"'])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<40} median {median:5.2f} s  ({min(samples):.2f}-{max(samples):.2f})  "
              f"{median / floor:4.1f}x bare Hydra")


if __name__ == "__main__":
    main()
