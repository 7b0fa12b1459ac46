"""Helpers for reading synthesized templates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtrain.core.assembly import (
    Resolver,
    UnresolvedReference,
    placeholder_resolver,
    render_definition,
    state_machine_definitions,
)

Template = dict[str, Any]


@dataclass(frozen=True)
class Synthesized:
    outdir: Path
    storage: Template
    workflow: Template
    messages: list[tuple[str, str, str]]
    #: The programs' folder it was synthesized from (CLI runs against it read the same ones).
    training_code: Path | None = None

    @property
    def templates(self) -> dict[str, Template]:
        return {"storage": self.storage, "workflow": self.workflow}

    def to_json(self) -> str:
        return json.dumps({"outdir": str(self.outdir), "storage": self.storage,
                           "workflow": self.workflow, "messages": self.messages,
                           "training_code": str(self.training_code) if self.training_code else None})

    @classmethod
    def from_json(cls, text: str) -> Synthesized:
        data = json.loads(text)
        return cls(outdir=Path(data["outdir"]), storage=data["storage"], workflow=data["workflow"],
                   messages=[tuple(message) for message in data["messages"]],
                   training_code=Path(data["training_code"]) if data["training_code"] else None)

    def definition(self) -> dict[str, Any]:
        """The workflow's state machine definition, tokens replaced by placeholders."""
        (definition_string,) = state_machine_definitions(self.workflow).values()
        return render_definition(definition_string, placeholder_resolver())


def resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {logical_id: resource for logical_id, resource in template["Resources"].items()
            if resource["Type"] == resource_type}


def only_resource(template: Template, resource_type: str) -> tuple[str, dict[str, Any]]:
    found = resources_of_type(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.items()))


def one_logical_id(template: Template, prefix: str) -> str:
    """The one resource whose logical id is ``prefix`` plus CDK's 8-character hash."""
    found: list[str] = [i for i in template["Resources"] if re.fullmatch(prefix + "[0-9A-F]{8}", i)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def references(value: Any, kind: str) -> list[Any]:
    """Every argument of the intrinsic ``kind`` (``Fn::GetStackOutput``, ``Fn::ImportValue``,
    ...) anywhere in ``value``."""
    if isinstance(value, dict):
        found = [value[kind]] if kind in value else []
        return found + [r for item in value.values() for r in references(item, kind)]
    if isinstance(value, list):
        return [r for item in value for r in references(item, kind)]
    return []


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of(template: Template, policy_logical_id: str) -> list[dict[str, Any]]:
    return list(template["Resources"][policy_logical_id]["Properties"]["PolicyDocument"]["Statement"])


def policies_attached_to(template: Template, role_logical_id: str) -> Iterator[str]:
    """Logical ids of AWS::IAM::Policy / ManagedPolicy resources that name the role by Ref."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        roles = resource["Properties"].get("Roles", [])
        if {"Ref": role_logical_id} in roles:
            yield logical_id


def actions_by_resource(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """``{(action, json of resource)}``: what may be done to what, order-free."""
    import json

    pairs = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                pairs.add((action, json.dumps(resource, sort_keys=True)))
    return pairs


def resource_arn(logical_id: str, suffix: str = "") -> str:
    """A resource's ARN (plus ``suffix``, such as ``/prefix/*``) as the template spells it, in the
    form :func:`actions_by_resource` uses as a key."""
    import json

    value: Any = {"Fn::GetAtt": [logical_id, "Arn"]}
    if suffix:
        value = {"Fn::Join": ["", [value, suffix]]}
    return json.dumps(value, sort_keys=True)


def all_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for statement in statements for action in as_list(statement["Action"])}


#: The storage stack's model registry outputs, which the workflow stack always reads.
REGISTRY_OUTPUT_PREFIXES = ("ModelPackageGroup", "ModelPackageVersions")


def _program_output(name: str) -> bool:
    """A storage output every deployment has per program: its model package group, or its
    execution role (CDK's weak reference: ``PublishOutput...ExecutionRole<Program>Role...``)."""
    return name.startswith(REGISTRY_OUTPUT_PREFIXES) or (
        name.startswith("PublishOutput") and "ExecutionRole" in name)


def job_role_ids(template: Template) -> list[str]:
    """The storage stack's roles a job may run as, by logical id: each shipped program's (in the
    template's order), then the earlier shared one."""
    roles = resources_of_type(template, "AWS::IAM::Role")
    programs = [i for i in roles if i.startswith("ExecutionRoleDigits")]
    (shared,) = [i for i in roles if i.startswith("SageMakerExecutionRole")]
    assert len(programs) == 3, programs
    return [*programs, shared]


def client_policy_of_every_job_role(template: Template, policy_prefix: str) -> str:
    """The one policy (logical id starting ``policy_prefix``) attached to every role a job runs
    as: each program's, and the earlier shared one."""
    clients = {tuple(p for p in policies_attached_to(template, role) if p.startswith(policy_prefix))
               for role in job_role_ids(template)}
    ((policy,),) = clients  # one policy, on every job role
    return policy


def reads_besides_the_programs(template: Template) -> list[Any]:
    """The template's ``Fn::GetStackOutput`` reads other than each program's (its model package
    group and its execution role)."""
    return [read for read in references(template, "Fn::GetStackOutput")
            if not _program_output(str(read["OutputName"]))]


def wait_idle(backend: Any, timeout: float = 30.0) -> bool:
    """True once the local backend runs no job (jobs stopped by an aborted execution included)
    and no tuning run."""
    import time

    from smtrain.local.backend import TERMINAL_STATUSES

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(job.status in TERMINAL_STATUSES for job in backend.jobs()) and all(
                run.done for run in list(backend._tuning.values())):
            return True
        time.sleep(0.1)
    return False


#: The cdk-nag packs the app runs (infra/compliance.py), each writing one report per stack.
NAG_PACKS = ("AwsSolutions", "HIPAA.Security", "NIST.800.53.R5", "PCI.DSS.321")


def nag_report_rows(synthesized: Synthesized) -> list[dict[str, str]]:
    """Every row of the cdk-nag reports the synth wrote beside the templates (one per pack and
    stack, all of them asserted present)."""
    import csv

    reports = sorted(synthesized.outdir.glob("*-NagReport.csv"))
    assert {r.name.split("--")[0] for r in reports} == set(NAG_PACKS), reports
    assert len(reports) == 2 * len(NAG_PACKS), "one report per pack and stack"
    rows: list[dict[str, str]] = []
    for report in reports:
        with report.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def cfn_lint(*templates: Path) -> list[str]:
    """cfn-lint's findings on ``templates`` with the project's settings (``.cfnlintrc.yaml``),
    run in this process as ``cfn-lint --config-file .cfnlintrc.yaml -- TEMPLATE...`` runs them:
    the command exits 0 exactly when this is empty. In-process, its rules and CloudFormation's
    resource schemas load once per test process instead of once per template
    (tests/test_lint.py runs the command itself on a broken template)."""
    from cfnlint.config import ConfigMixIn
    from cfnlint.runner.cli import Runner

    root = Path(__file__).resolve().parents[1]
    config = ConfigMixIn(["--config-file", str(root / ".cfnlintrc.yaml"), "--", *map(str, templates)])
    return [f"{match.rule.id} {match.filename}:{match.linenumber}: {match.message}"
            for match in Runner(config).run()]


def run_cli(args: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``smtrain ARGS`` as a process would run it (its whole environment ``env``, working
    directory ``cwd``, stdout and stderr captured, the exit status), in this process: the CLI
    builds its AWS session from the environment at each command, so nothing of one call reaches
    the next. A few smoke tests still start the real ``smtrain`` process."""
    from smtrain.cli import main

    return run_main(main, ["smtrain"], args, env=env, cwd=cwd)


def run_main(main: Callable[[list[str]], int], program: Sequence[str], args: Sequence[str], *,
             env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``main(args)`` run as the process ``program ARGS`` would run it (see :func:`run_cli`)."""
    import contextlib
    import io
    import os

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    _set_environment(env)  # key by key: the process's other threads never see an empty one
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse: --help, usage errors
                # As the interpreter ends a process: an int is the status, a text is printed (1).
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
    finally:
        os.chdir(saved_cwd)
        _set_environment(saved_env)
    return subprocess.CompletedProcess([*program, *args], code, out.getvalue(), err.getvalue())


def _set_environment(env: Mapping[str, str]) -> None:
    import os

    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    os.environ.update(env)


def mapping_resolver(substitutes: Mapping[str, str]) -> Resolver:
    """A resolver that looks a reference up in ``substitutes``, keyed by:
    ``Ref``: the logical id or pseudo parameter (``AWS::Region``); ``Fn::GetAtt``:
    ``"LogicalId.Attribute"``; ``Fn::ImportValue``: the export name."""

    def resolve(kind: str, argument: Any) -> str:
        key = ".".join(argument) if isinstance(argument, list) else str(argument)
        try:
            return substitutes[key]
        except KeyError:
            raise UnresolvedReference(f"no substitute for {kind} {key!r}") from None

    return resolve


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (exited and not yet reaped, a zombie, counts as ended)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
