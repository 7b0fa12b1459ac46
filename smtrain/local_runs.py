"""``smtrain start --local``: the same run, on the offline engine (see ``smtrain.local``)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from smtrain.cli import EXIT_ABORTED, EXIT_FAILED, EXIT_OK
from smtrain.deployment_lookup import ResourceNotFound
from smtrain.execution_request import upload_prefix


def start_local(args: argparse.Namespace, draft: dict[str, Any], channel_inputs: Any, name: str) -> int:
    """Run the execution in this process and follow it to its end (there is no service to come
    back to, so ``--local`` implies ``--wait``). Sample data is put in place when the default
    channels are empty."""
    if not (args.cdk_out / "manifest.json").is_file():
        raise ResourceNotFound(f"{args.cdk_out} holds no synthesized app: run `make synth` first")
    from smtrain.local.demo import Progress
    from smtrain.local.engine import OfflineEngine

    progress = Progress()
    on_log = progress.log if not args.logs else (lambda job, line: progress.say(f"[{job[-14:]}] {line}"))
    with OfflineEngine(outdir=args.cdk_out, work_dir=args.work_dir, on_log=on_log) as engine:
        bucket = engine.deployment.data_bucket
        channels = {}
        for channel in channel_inputs:
            if channel.local_dir is not None:
                uri = f"s3://{bucket}/{upload_prefix(name, channel.channel)}"
                count = len(engine.s3.put_tree(channel.local_dir, uri))
                print(f"copied {count} files from {channel.local_dir} to {uri}", flush=True)
            else:
                uri = channel.s3_uri
            channels[channel.channel] = uri
        execution_input = {**draft, **({"inputs": channels} if channels else {})}
        default_data = f"s3://{bucket}/datasets/{draft['method']}/"
        if not engine.s3.objects_under(default_data):
            from training_code.sample_data import write_datasets

            sample = args.work_dir / "sample-data"
            write_datasets(sample)
            engine.s3.put_tree(sample, f"s3://{bucket}/datasets/")
            print(f"put the sample datasets under s3://{bucket}/datasets/ (local stand-in)", flush=True)
        print(f"Started {name} locally (state machine from {args.cdk_out}; S3 stand-in "
              f"{engine.s3.root})", flush=True)
        progress.started = time.monotonic()
        result = engine.run(execution_input, name=name, on_event=progress.event)
        print(f"  {result.status} in {time.monotonic() - progress.started:.1f} s", flush=True)
        if result.succeeded and result.output is not None:
            output = result.output
            print(f"model: {output['modelArtifacts']}\n       = {engine.local_path(output['modelArtifacts'])}")
            print("metrics: " + "  ".join(f"{m['MetricName']}={m['Value']}" for m in output["metrics"]))
            print(json.dumps(output, indent=2))
            return EXIT_OK
        from smtrain.watch import failure_reason

        print(f"{result.status}: {result.error}\nreason: {failure_reason(result.cause) or result.cause}")
        return EXIT_FAILED if result.status == "FAILED" else EXIT_ABORTED
