#!/usr/bin/env python3
"""CDK entry point: reads configuration once (context + environment) and builds the stacks.

On the way in, Node builds CDK's template validation engine (about a second of its time) while
Python loads the project's modules and reads the training programs: the two sides of jsii work at
once instead of in turn (docs/performance.md, "Synth").
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from infra.node_runtime import use_pinned_node

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


def _start_template_validation() -> Future[None] | None:
    """Synthesize an empty app in a thread of its own, so that Node builds CDK's template
    validation engine (CDK keeps one per process, and this app's synth reuses it) while this
    thread loads the project's modules and reads the programs; None where validation is off
    (``cdk synth --no-validation`` sets ``CDK_VALIDATION``). What the app synthesizes is the same
    either way: its own synth validates it as before.

    jsii is one pipe to one Node process: until that synth is over, this thread makes no jsii call
    (tests/test_app_start.py checks that loading the modules and reading the programs make none)."""
    if os.environ.get("CDK_VALIDATION") == "false":
        return None

    def synth_empty_app() -> None:
        with tempfile.TemporaryDirectory(prefix="smtrain-validation-") as outdir:
            # No performance report: an app without stacks counts as a slow synth, and its
            # report would land where the CLI reads this app's (CDK_PERF_COUNTERS_FILE).
            cdk.App(outdir=outdir, performance_reporting=False, tree_metadata=False).synth()

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation")
    done = executor.submit(synth_empty_app)
    executor.shutdown(wait=False)
    return done


_validation = _start_template_validation()

from infra.app_builder import build_app  # noqa: E402
from infra.settings import CONTEXT_KEY, SettingsError, settings_from_context  # noqa: E402
from infra.stacks.workflow_stack import TRAINING_CODE_DIR  # noqa: E402
from smtrain.core.contract import ENV_TRAINING_CODE  # noqa: E402
from smtrain.core.programs import Program, ProgramError  # noqa: E402
from smtrain.core.programs import discover as discover_programs  # noqa: E402

gc.freeze()
gc.enable()


def main() -> None:
    # The programs' folder: training_code/, or SMTRAIN_TRAINING_CODE (tests, other trees). Read
    # while the validation plugin is built; a bad program is reported after the settings, as
    # before.
    code = os.environ.get(ENV_TRAINING_CODE)
    training_code_dir = Path(code) if code else TRAINING_CODE_DIR
    programs: dict[str, Program] | ProgramError
    try:
        programs = discover_programs(training_code_dir)
    except ProgramError as error:
        programs = error
    if _validation is not None:
        _validation.result()  # before any other jsii call
    app = cdk.App()
    try:
        settings = settings_from_context(
            app.node.try_get_context(CONTEXT_KEY),
            region=os.environ.get("CDK_DEFAULT_REGION") or app.node.try_get_context("defaultRegion"),
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        )
        if isinstance(programs, ProgramError):
            raise programs
        build_app(settings, app=app, training_code_dir=training_code_dir, programs=programs)
    except (SettingsError, ProgramError) as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
    gc.freeze()
