"""How fast `smtrain` answers when no AWS call is needed: --help and validation errors.

Each case runs the installed console script as a new process --repeats times; medians are
printed. Goal: well under a second (heavy modules are imported only by commands that need them).

    .venv/bin/python benchmarks/cli_latency_bench.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SMTRAIN = str(Path(sys.executable).parent / "smtrain")
CASES = {
    "smtrain --help": ["--help"],
    "smtrain start --help": ["start", "--help"],
    "unknown method": ["start", "--method", "sklearn"],
    "malformed hyperparameter": ["start", "--method", "script", "--hp", "epochs"],
    "instance type off the allow-list": ["start", "--method", "script", "--instance-type", "ml.p5.48xlarge"],
    "invalid tuning JSON (the input rules)": ["start", "--method", "script", "--tune", "{tuning}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with open("/tmp/smtrain-bench-tuning.json", "w") as tuning:
        tuning.write('{"strategy": "Genetic"}')
    print(f"{'case':<36} median   max")
    for label, command in CASES.items():
        command = [a.replace("{tuning}", "/tmp/smtrain-bench-tuning.json") for a in command]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([SMTRAIN, *command], capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        print(f"{label:<36} {statistics.median(times):.3f} s  {max(times):.3f} s")


if __name__ == "__main__":
    main()
