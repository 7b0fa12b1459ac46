"""Cold `cdk synth` of this app against a one-bucket CDK app, in the same run.

Each synth is a fresh `npx cdk synth` process (cold: new Python, new jsii/Node), timed with a
monotonic clock, repeated --runs times; the medians and their ratio are printed. Goal: ratio <= 1.25.

    .venv/bin/python benchmarks/synth_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CDK = ROOT / "node_modules" / ".bin" / "cdk"

ONE_BUCKET_APP = """
import aws_cdk as cdk
from aws_cdk import aws_s3 as s3

app = cdk.App()
stack = cdk.Stack(app, "OneBucket", env=cdk.Environment(region="us-east-1"))
s3.Bucket(stack, "Bucket")
app.synth()
"""


def synth_seconds(app_command: str, outdir: Path, cwd: Path) -> float:
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "1"}
    start = time.monotonic()
    subprocess.run([str(CDK), "synth", "--no-notices", "--quiet", "--app", app_command,
                    "--output", str(outdir)], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="synths of each app (default 3)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory() as scratch:
        baseline_app = Path(scratch) / "one_bucket.py"
        baseline_app.write_text(ONE_BUCKET_APP)
        prelude = "from infra.node_runtime import use_pinned_node; use_pinned_node()"
        baseline_cmd = f"{sys.executable} -c '{prelude}; exec(open(\"{baseline_app}\").read())'"
        ours, baseline = [], []
        for run in range(args.runs):
            baseline.append(synth_seconds(baseline_cmd, Path(scratch) / f"b{run}", ROOT))
            ours.append(synth_seconds(f"{sys.executable} app.py", Path(scratch) / f"o{run}", ROOT))
    ours_median, baseline_median = statistics.median(ours), statistics.median(baseline)
    print(f"one-bucket app: median {baseline_median:.2f} s  runs {[round(t, 2) for t in baseline]}")
    print(f"this app:       median {ours_median:.2f} s  runs {[round(t, 2) for t in ours]}")
    print(f"ratio:          {ours_median / baseline_median:.2f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
