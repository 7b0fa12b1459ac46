"""Builds the CDK app from settings (shared by ``app.py``, the tests and the benchmark)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk

from infra.compliance import apply_rule_packs
from infra.settings import Settings
from infra.stacks.storage_stack import StorageStack
from infra.stacks.workflow_stack import TRAINING_CODE_DIR, WorkflowStack, stack_tags
from smtrain.core.programs import Program
from smtrain.core.programs import discover as discover_programs


@dataclass(frozen=True)
class TrainingApp:
    app: cdk.App
    storage: StorageStack
    workflow: WorkflowStack


def build_app(settings: Settings, *, app: cdk.App | None = None,
              check_compliance: bool = True,
              training_code_dir: Path = TRAINING_CODE_DIR,
              programs: Mapping[str, Program] | None = None) -> TrainingApp:
    """Add both stacks to ``app`` (a new one by default), tagged and in the settings' region,
    checked by the cdk-nag rule packs unless ``check_compliance`` is false, with every training
    program found in ``training_code_dir`` (default: the project's ``training_code/``), or
    ``programs`` where the caller has read them from there already."""
    app = app or cdk.App()
    env = cdk.Environment(account=settings.account, region=settings.region)
    if programs is None:
        programs = discover_programs(training_code_dir)
    storage = StorageStack(app, "Storage", stack_name=settings.storage_stack_name, env=env,
                           settings=settings, programs=sorted(programs),
                           description="SageMaker training: KMS key, buckets, ECR, execution "
                                       "role, model registry (retained)")
    workflow = WorkflowStack(app, "Workflow", stack_name=settings.workflow_stack_name, env=env,
                             settings=settings, storage=storage, programs=programs,
                             training_code_dir=training_code_dir,
                             description="SageMaker training: assets, state machine, logs, alerts")
    for stack in (storage, workflow):
        for key, value in stack_tags(settings).items():
            cdk.Tags.of(stack).add(key, value)
    if check_compliance:
        apply_rule_packs(app)
    return TrainingApp(app=app, storage=storage, workflow=workflow)
