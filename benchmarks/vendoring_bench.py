"""What vendoring a script program's requirements (``network`` sealed, vpc or isolated) adds to
its bundle and to synth.

For digits_mlp's tracking requirements (MLflow's client, shipped where jobs are tracked): the
bundle's size without and with its wheels; the time to build the bundle
without them, with them from a warm wheel cache (median of --runs; again with the compressed
archive kept by content, as ``SourceBundle`` does), and with a cold cache (one
``pip download`` into an empty folder, --cold); with --synth, a cold ``npx cdk synth`` of the
whole app tracked from ``network`` public and from vpc (an existing VPC; warm cache), --runs
each, alternating.

    .venv/bin/python benchmarks/vendoring_bench.py --runs 3 --cold --synth
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtrain.core.source_archive import build_source_tarball  # noqa: E402
from smtrain.core.vendored_requirements import WheelTarget, vendored_files  # noqa: E402

PROGRAM = ROOT / "training_code" / "digits_mlp"
SHARED = {"common": ROOT / "training_code" / "common"}
#: digits_mlp's requirements ship where jobs are tracked: its tracking requirements (MLflow's client).
REQUIREMENTS = PROGRAM / "requirements-tracking.txt"
#: Tracked from a VPC (vendored) against tracked in public (pip at job start): the same bundle
#: contents but for the wheels.
PUBLIC = {"network": "public", "experimentTracking": "server"}
ISOLATED = {"network": "vpc", "experimentTracking": "server", "vpcId": "vpc-0123456789abcdef0",
            "subnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba987654321f"]}


def _bundle(target: WheelTarget | None, gzip_cache: Path | None = None) -> tuple[bytes, float]:
    start = time.monotonic()
    replacements = (vendored_files(REQUIREMENTS, program="digits_mlp",
                                   target=target) if target else None)
    data = build_source_tarball(PROGRAM, extra_packages=SHARED, replacements=replacements,
                                gzip_cache=gzip_cache)
    return data, time.monotonic() - start


def _median(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s  runs {[round(v, 2) for v in values]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time one download, empty cache")
    parser.add_argument("--synth", action="store_true", help="also time whole-app synths")
    args = parser.parse_args()
    target = WheelTarget(python_version="3.11")
    _bundle(target)  # fill the warm cache
    plain_times: list[float] = []
    vendored_times: list[float] = []
    for _ in range(args.runs):
        plain, seconds = _bundle(None)
        plain_times.append(seconds)
        vendored, seconds = _bundle(target)
        vendored_times.append(seconds)
    wheels = [name for name in vendored_files(REQUIREMENTS, program="digits_mlp",
                                               target=target) if name.endswith(".whl")]
    print(f"bundle without wheels: {len(plain) / 1e6:.3f} MB")
    print(f"bundle with wheels:    {len(vendored) / 1e6:.3f} MB ({len(wheels)} wheels)")
    print(f"build, no wheels:      {_median(plain_times)}")
    print(f"build, warm cache:     {_median(vendored_times)}")
    with tempfile.TemporaryDirectory() as archives:
        _bundle(target, Path(archives))
        packed_times = [_bundle(target, Path(archives))[1] for _ in range(args.runs)]
    print(f"build, warm cache, archive kept (as SourceBundle does): {_median(packed_times)}")
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            _, seconds = _bundle(WheelTarget(python_version="3.11", cache_dir=Path(cache)))
        print(f"build, cold cache:     {seconds:.2f} s (pip download of every wheel)")
    if args.synth:
        public: list[float] = []
        isolated: list[float] = []
        with tempfile.TemporaryDirectory() as scratch:
            for run in range(args.runs):
                for mode, times in ((PUBLIC, public), (ISOLATED, isolated)):
                    context = json.dumps({**json.loads((ROOT / "cdk.json").read_text())
                                          ["context"]["training"], **mode})
                    times.append(_synth(f"{sys.executable} app.py", context,
                                        Path(scratch) / f"{run}-{len(mode)}"))
        print(f"cdk synth, public (tracked):   {_median(public)}")
        print(f"cdk synth, vpc (tracked, vendored): {_median(isolated)}")


def _synth(app_command: str, context: str, outdir: Path) -> float:
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "1"}
    start = time.monotonic()
    subprocess.run([str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--no-notices",
                    "--quiet", "--app", app_command, "-c", f"training={context}",
                    "--output", str(outdir)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


if __name__ == "__main__":
    main()
