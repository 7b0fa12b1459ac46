"""`make demo`: the synthesized workflow run offline, from sample data to trained models.

    python -m smtrain.local.demo [--method script|byoc|builtin] [--tuning-jobs 4] [--parallel 2]

The work dir (default .work/demo) is kept from one demo to the next.

1. loads the state machine from ``cdk.out`` and resolves it to local stand-ins;
2. writes the sample datasets into the S3 stand-in under the data bucket's default prefixes;
3. runs one training execution for ``--method``, then (unless ``--tuning-jobs 0``) a tuning
   execution, each through moto's ASL interpreter with every training job really run here;
4. prints progress as it goes and, at the end, the model artifacts and metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from smtrain.core import contract, prices
from smtrain.local.engine import ExecutionResult, OfflineEngine

ROOT = Path(__file__).resolve().parents[2]
KIND_NOTES = {
    "script": "the PyTorch script from the sourcedir.tar.gz asset, run by AWS's training toolkit",
    "byoc": "the BYOC image's train entry point on the host Python (no Docker engine here)",
    "builtin": "a local stand-in for SageMaker XGBoost (the xgboost library)",
}
TASK_NOTES = {"TrainModel": "starting the training job",
              "TuneModel": "starting the hyperparameter tuning job",
              "DescribeBestTrainingJob": "reading the best training job",
              "WriteQualityReport": "writing the model-quality report to S3",
              "FreezeRegisteredModel": "copying the model under registry/ (the version names the copy)",
              contract.QUEUE_SUBMIT_STATE: "submitting the training job to the team queue",
              contract.QUEUE_DESCRIBE_STATE: "asking the team queue where the job stands",
              "DescribeQueuedTrainingJob": "reading the training job the queue ran",
              "RegisterModelVersion": "registering the model version (PendingManualApproval)"}
#: Shorter runs of the shipped programs (other programs train with their defaults).
QUICK_HYPERPARAMETERS = {"digits_mlp": {"epochs": "5"}, "digits_lightgbm": {"num_boost_round": "50"},
                         "digits_xgboost": {"num_round": "30"}}
#: The first release's ``--method`` names, as the program of that kind the project ships.
METHOD_PROGRAMS = {"script": "digits_mlp", "byoc": "digits_lightgbm", "builtin": "digits_xgboost"}


class Progress:
    """Prints state transitions and metric lines with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"  {int(elapsed // 60):02d}:{elapsed % 60:04.1f}  {text}", flush=True)

    def event(self, event: dict[str, Any]) -> None:
        if event["type"] == "TaskStateEntered":
            state = event["stateEnteredEventDetails"]["name"]
            self.say(f"{state}: {TASK_NOTES.get(state, 'calling SageMaker')}")
        elif event["type"] in ("FailStateEntered", "ExecutionFailed", "ExecutionAborted"):
            self.say(f"{event['type']}")

    def log(self, job: str, line: str) -> None:
        if line.startswith("epoch=") or "#011" in line or line.startswith("smtrain local:"):
            self.say(f"[{job[-14:]}] {line.replace('#011', ' ')}")


def report(engine: OfflineEngine, result: ExecutionResult, seconds: float) -> bool:
    print(f"  {result.status} in {seconds:.1f} s", flush=True)
    if not result.succeeded or result.output is None:
        print(f"  error: {result.error}\n  cause: {(result.cause or '')[:2000]}")
        return False
    output = result.output
    if "tuningJobName" in output:
        objective = output["objective"]
        print(f"  tuning job:  {output['tuningJobName']} ({output['trainingJobCounters']['Completed']} "
              f"jobs completed)")
        print(f"  best job:    {output['trainingJobName']}  {objective['MetricName']}="
              f"{objective['Value']:.4f}  with {output['tunedHyperparameters']}")
    else:
        print(f"  job:         {output['trainingJobName']}")
    print(f"  model:       {output['modelArtifacts']}")
    print(f"               = {engine.local_path(output['modelArtifacts'])}")
    metrics = "  ".join(f"{m['MetricName']}={float(m['Value']):.4f}" for m in output["metrics"])
    print(f"  metrics:     {metrics}")
    if output.get("registered"):
        print(f"  registered:  {output['modelPackageArn']} (PendingManualApproval)")
        print(f"  approve:     .venv/bin/smtrain models approve {output['modelPackageArn']} --local "
              f"--work-dir {engine.work_dir}  (shows its metrics, then asks why)")
    print(f"  registry:    {output.get('registrationReason', 'not asked')}")
    cost = prices.output_cost_line(output, engine.region)  # "job NAME cost: ..." / "tuning job ..."
    if cost is not None:
        print(f"  cost:        {cost.split(' cost: ', 1)[-1]}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtrain.local.demo", description=__doc__.splitlines()[0])
    routing = parser.add_mutually_exclusive_group()
    routing.add_argument("--program", default=None,
                         help="a folder of training_code/ with a program.toml (default digits_mlp)")
    routing.add_argument("--method", choices=sorted(METHOD_PROGRAMS),
                         help="the shipped program of that kind")
    parser.add_argument("--tuning-jobs", type=int, default=4, help="0 skips the tuning run (default 4)")
    parser.add_argument("--parallel", type=int, default=2, help="tuning jobs at a time (default 2)")
    parser.add_argument("--outdir", type=Path, default=ROOT / "cdk.out", help="synthesized app")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".work" / "demo",
                        help="S3 stand-in, job trees, tracked runs and registered model versions, "
                        "kept from one demo to the next (delete it to start afresh; default "
                        ".work/demo)")
    args = parser.parse_args(argv)
    if args.tuning_jobs < 0 or args.parallel < 1:
        parser.error("--tuning-jobs must be >= 0 and --parallel >= 1")
    if not (args.outdir / "manifest.json").is_file():
        parser.error(f"{args.outdir} holds no synthesized app: run `make synth` first")
    from smtrain.core.programs import discover

    programs = discover()
    name = args.program or METHOD_PROGRAMS[args.method or "script"]
    if name not in programs:
        parser.error(f"--program {name!r} is not one of {', '.join(sorted(programs))}")
    program = programs[name]

    from training_code.sample_data import write_datasets

    progress = Progress()
    print(f"Offline run of the synthesized workflow in {args.outdir}")
    earlier = sum(1 for _ in (args.work_dir / "jobs").glob("*"))  # none where it does not exist
    if earlier:
        # Kept, not emptied: a model version approved after the last demo is still there.
        print(f"  work dir {args.work_dir}: kept from earlier demos ({earlier} training jobs, "
              "their tracked runs and registered versions); delete it to start afresh")
    with OfflineEngine(outdir=args.outdir, work_dir=args.work_dir, on_log=progress.log) as engine:
        data_uri = f"s3://{engine.deployment.data_bucket}/{contract.DATASETS_PREFIX}"
        sample_data = args.work_dir / "sample-data"
        write_datasets(sample_data)
        engine.s3.put_tree(sample_data, data_uri)
        print(f"  S3 stand-in: {engine.s3.root}   sample data: {data_uri}<program>/<channel>/")
        quick = QUICK_HYPERPARAMETERS.get(program.name, {})
        base = {contract.PROGRAM: program.name, **({contract.HYPERPARAMETERS: quick} if quick else {})}
        runs: list[tuple[str, dict[str, Any]]] = [
            (f"{program.name} training: {KIND_NOTES[program.kind]}", base)]
        if args.tuning_jobs and program.tuning is not None:
            runs.append((f"{program.name} tuning: {args.tuning_jobs} jobs, {args.parallel} at a time "
                         "(Bayesian, Optuna's TPE)",
                         {**base, "tuning": {"maxJobs": args.tuning_jobs,
                                             "maxParallelJobs": args.parallel}}))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        ok = True
        for index, (title, execution_input) in enumerate(runs, start=1):
            execution = f"demo-{program.name.replace('_', '-')}-{index}-{stamp}"
            print(f"\n[{index}/{len(runs)}] {title}\n  execution {execution}  input {execution_input}")
            progress.started = time.monotonic()
            result = engine.run(execution_input, name=execution, on_event=progress.event)
            ok = report(engine, result, time.monotonic() - progress.started) and ok
    others = " | ".join(sorted(set(programs) - {program.name}))
    print(f"\nOther programs: python -m smtrain.local.demo --program {others}")
    print(f"Compare the tracked runs: .venv/bin/smtrain compare --local --work-dir {args.work_dir}")
    print(f"Registered versions:      .venv/bin/smtrain models list --local --work-dir {args.work_dir}")
    print(f"(`smtrain ... --local` reads .work/local by default: pass --work-dir {args.work_dir} "
          "for the demo's runs and versions)")
    return 0 if ok else 1


if __name__ == "__main__":
    from smtrain.core.command_process import tune_garbage_collector

    tune_garbage_collector()
    sys.exit(main())
