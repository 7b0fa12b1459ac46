#!/usr/bin/env python3
"""CDK entry point: reads configuration once (context + environment) and builds the stacks.

On the way in, Node builds CDK's template validation engine (about a second of its time) while
Python loads the CDK modules and reads the training programs: the two sides of jsii work at once
instead of in turn (docs/performance.md, "Synth").
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor

from infra.node_runtime import use_pinned_node
from infra.settings import CONTEXT_KEY, SettingsError, settings_from_context


def _refuse_bad_settings_early() -> None:
    """A bad setting stops synth before Node starts (about 3 s sooner): the CDK CLI hands the app
    its context as ``CDK_CONTEXT_JSON`` (cdk.json's and ``--context``'s), the same context
    ``main`` reads through ``cdk.App``, which checks it again. Without that variable (the CLI
    wrote the context to a file instead, or the app runs by hand) the check waits for ``main``."""
    raw = os.environ.get("CDK_CONTEXT_JSON")
    if not raw:
        return
    try:
        context = json.loads(raw)
    except ValueError:
        return  # not ours to judge: cdk.App reads it as it always does
    try:
        settings_from_context(context.get(CONTEXT_KEY),
                              region=os.environ.get("CDK_DEFAULT_REGION") or context.get("defaultRegion"),
                              account=os.environ.get("CDK_DEFAULT_ACCOUNT"))
    except SettingsError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _refuse_bad_settings_early()

use_pinned_node()

# A synth is one short process, and Python's cyclic garbage collector only costs it time
# (docs/performance.md, "Synth"): nothing the imports create is garbage (the jsii modules' classes,
# about 140,000 objects), so no collection runs while they load, and they are then frozen out of
# every later collection. At exit the whole heap is frozen too: the interpreter's last collection
# over it would only free memory that the OS takes back anyway (jsii stops Node in an atexit hook,
# which runs before it).
gc.disable()

import aws_cdk as cdk  # noqa: E402  (jsii starts Node on import)
import cdk_nag  # noqa: E402, F401  (loads its jsii assembly now, before the two sides work at once)

#: The CDK modules the default app's constructs use. jsii is one pipe to one Node process, so
#: while Node builds the validation engine this thread runs only what cannot call jsii: these
#: modules' Python classes (jsii's generated code makes no call on import) and the programs
#: (smtrain.core has no CDK in it). The project's constructs load afterwards, as they may call
#: jsii on import (a module-level ``ecr_assets.Platform.LINUX_AMD64``); a module missing here
#: only loads later (tests/test_app_start.py checks both).
CDK_MODULES = (
    "aws_cdk.aws_iam", "aws_cdk.aws_kms", "aws_cdk.aws_s3", "aws_cdk.aws_s3_assets",
    "aws_cdk.aws_ecr", "aws_cdk.aws_ecr_assets", "aws_cdk.aws_lambda", "aws_cdk.aws_logs",
    "aws_cdk.aws_events", "aws_cdk.aws_events_targets", "aws_cdk.aws_sns",
    "aws_cdk.aws_sns_subscriptions", "aws_cdk.aws_stepfunctions", "aws_cdk.aws_sagemaker",
)


def _start_template_validation() -> Future[None] | None:
    """Warm CDK's template validation up in a thread of its own: synthesize a throwaway app of
    one small stack, so that Node builds the validation engine (CDK keeps one per process, and
    this app's synth reuses it) and V8 compiles the engine's busiest WebAssembly for speed, which
    it does only once that code has run a while; else it would still be compiling when the synth
    ends, and Node's exit waits for that (about 0.3 s). None where validation is off (``cdk synth
    --no-validation`` sets ``CDK_VALIDATION``). What the app synthesizes is the same either way:
    its own synth validates it as before, and the throwaway app's output is deleted."""
    if os.environ.get("CDK_VALIDATION") == "false":
        return None

    def synth_throwaway_app() -> None:
        with tempfile.TemporaryDirectory(prefix="smtrain-validation-") as outdir:
            # No performance report (it would land where the CLI reads this app's), and nothing
            # printed should the validator ever find fault with this stack: only the real app's
            # findings are the user's (errors kept as errors, then neither printed nor raised).
            app = cdk.App(outdir=outdir, performance_reporting=False, tree_metadata=False,
                          context={"@aws-cdk/core:validateAgainstDefaultRules": True,
                                   "@aws-cdk/core:failSynthOnValidationErrors": False})
            stack = cdk.Stack(app, "ValidationWarmUp")
            cdk.CfnResource(stack, "Bucket", type="AWS::S3::Bucket", properties={
                "VersioningConfiguration": {"Status": "Enabled"}})
            cdk.CfnResource(stack, "Role", type="AWS::IAM::Role", properties={
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": "sts:AssumeRole",
                    "Principal": {"Service": "states.amazonaws.com"}}]},
                "Policies": [{"PolicyName": "Read", "PolicyDocument": {
                    "Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}]}}]})
            app.synth()

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation")
    done = executor.submit(synth_throwaway_app)
    executor.shutdown(wait=False)
    return done


_validation = _start_template_validation()
for _module in CDK_MODULES:
    importlib.import_module(_module)

from smtrain.core.programs import Program, ProgramError, programs_folder  # noqa: E402
from smtrain.core.programs import discover as discover_programs  # noqa: E402

# The programs' folder: training_code/, or SMTRAIN_TRAINING_CODE (tests, other trees). A bad
# program is reported after the settings, as before.
_training_code_dir = programs_folder()
_programs: dict[str, Program] | ProgramError
try:
    _programs = discover_programs(_training_code_dir)
except ProgramError as _error:
    _programs = _error

if _validation is not None:
    # From here on, this thread alone calls jsii. The warm-up is only a head start: should it
    # fail, the app's own synth builds the engine and validates as it always does.
    with contextlib.suppress(Exception):
        _validation.result()

from infra.app_builder import build_app  # noqa: E402
from smtrain.core.vendored_requirements import VendoringError  # noqa: E402

gc.freeze()
gc.enable()


def main() -> None:
    app = cdk.App()
    try:
        settings = settings_from_context(
            app.node.try_get_context(CONTEXT_KEY),
            region=os.environ.get("CDK_DEFAULT_REGION") or app.node.try_get_context("defaultRegion"),
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        )
        if isinstance(_programs, ProgramError):
            raise _programs
        build_app(settings, app=app, training_code_dir=_training_code_dir, programs=_programs)
    except (SettingsError, ProgramError) as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except VendoringError as error:  # a requirement with no wheel for the framework image
        print(f"Requirements error: {error}", file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
    gc.freeze()
