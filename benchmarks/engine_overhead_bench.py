"""The offline engine's overhead: one trivial training job through the engine against the same
job run directly through the SageMaker training toolkit, in the same run.

The job is the script program ``digits_mlp`` for 1 epoch on the sample data. "Direct" builds
the same fake /opt/ml and runs the toolkit's ``train``; "engine" starts an execution of the
synthesized state machine (moto's interpreter, input checks, the SageMaker service, the job,
model.tar.gz) and waits for it. Medians of --repeats; goal: overhead <= 2 s. By default the
engine tracks the job in its MLflow store (as ``smtrain start --local`` does), which the direct
run does not; ``--no-tracking`` leaves that out.

    .venv/bin/python benchmarks/engine_overhead_bench.py --repeats 3   (needs `make synth`)
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
sys.path.insert(0, str(ROOT))

from smtrain.local.engine import OfflineEngine  # noqa: E402
from smtrain.local.job_tree import build_job_tree  # noqa: E402
from smtrain.local.program_envs import bundle_requirements, default_cache_dir, environment_for  # noqa: E402
from training_code.sample_data import write_datasets  # noqa: E402

PROGRAM = "digits_mlp"
HYPERPARAMETERS = {"epochs": "1"}


def direct(engine: OfflineEngine, data: Path, work: Path) -> float:
    """The toolkit alone, on the same tarball and channels the engine uses, run as the engine
    runs it (``smtrain.local.toolkit_train`` in the program environment of the tarball's
    ``requirements.txt``), so the difference is the engine's own work."""
    prepared = engine.deployment.definition["States"]["PrepareDigitsMlpCpu"]["Result"]
    # Merged as the state machine merges them: base < training defaults < user < fixed.
    hyperparameters = {**prepared["baseHyperparameters"], **prepared["trainingDefaults"], **HYPERPARAMETERS,
                       **prepared["fixedHyperparameters"]}
    # Under network isolation (the default, sealed) the tarball is the code channel's object,
    # named in the container by its path: the same file on disk either way.
    code = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in prepared.get("codeChannels", [])]
    hyperparameters["sagemaker_submit_directory"] = str(
        engine.local_path(code[0] if code else hyperparameters["sagemaker_submit_directory"]))
    start = time.perf_counter()
    tree = build_job_tree(work, hyperparameters=hyperparameters,
                          channels={c: data / PROGRAM / c for c in ("train", "validation")})
    requirements = bundle_requirements(Path(hyperparameters["sagemaker_submit_directory"]),
                                       work.parent / "requirements.txt")
    python = environment_for(requirements, default_cache_dir())
    subprocess.run([str(python), "-m", "smtrain.local.toolkit_train"], check=True, capture_output=True,
                   env={**os.environ, **tree.environment(), "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def through_engine(engine: OfflineEngine, name: str) -> float:
    start = time.perf_counter()
    result = engine.run({"program": PROGRAM, "hyperparameters": HYPERPARAMETERS}, name=name)
    elapsed = time.perf_counter() - start
    if not result.succeeded:
        raise SystemExit(f"engine run failed: {result.error}: {result.cause}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outdir", type=Path, default=ROOT / "cdk.out")
    parser.add_argument("--no-tracking", action="store_true",
                        help="run the engine without its MLflow store (the direct run has none): "
                             "the engine's own overhead, without what MLflow tracking costs a job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data = work / "data"
        write_datasets(data)
        with OfflineEngine(outdir=args.outdir, work_dir=work / "engine",
                           tracking=not args.no_tracking) as engine:
            engine.s3.put_tree(data, f"s3://{engine.deployment.data_bucket}/datasets/")
            through_engine(engine, "warm-up")
            direct_times, engine_times = [], []
            for repeat in range(args.repeats):
                direct_times.append(direct(engine, data, work / f"direct-{repeat}"))
                engine_times.append(through_engine(engine, f"bench-{repeat}"))
    direct_median, engine_median = statistics.median(direct_times), statistics.median(engine_times)
    print(f"toolkit directly: median {direct_median:.2f} s  runs {[round(t, 2) for t in direct_times]}")
    print(f"through engine:   median {engine_median:.2f} s  runs {[round(t, 2) for t in engine_times]}")
    print(f"overhead:         {engine_median - direct_median:.2f} s (goal <= 2 s)")


if __name__ == "__main__":
    main()
