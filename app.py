#!/usr/bin/env python3
"""CDK entry point: reads configuration once (context + environment) and builds the stacks."""

from __future__ import annotations

import gc
import os
import sys
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

from infra.app_builder import build_app  # noqa: E402
from infra.settings import CONTEXT_KEY, SettingsError, settings_from_context  # noqa: E402
from smtrain.core.contract import ENV_TRAINING_CODE  # noqa: E402
from smtrain.core.programs import ProgramError  # noqa: E402

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
        # The programs' folder: training_code/, or SMTRAIN_TRAINING_CODE (tests, other trees).
        code = os.environ.get(ENV_TRAINING_CODE)
        if code:
            build_app(settings, app=app, training_code_dir=Path(code))
        else:
            build_app(settings, app=app)
    except (SettingsError, ProgramError) as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
    gc.freeze()
