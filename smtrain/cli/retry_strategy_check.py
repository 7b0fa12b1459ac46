"""What Step Functions' ``ValidateStateMachineDefinition`` answers about SageMaker's ``RetryStrategy``.

The stack sends ``RetryStrategy`` only when the ``sagemakerRetryAttempts`` setting asks for it
(``contract.SAGEMAKER_RETRY_SETTING`` says why). ``smtrain preflight`` validates the definition as
synthesized, then the same definition with ``RetryStrategy`` on every SageMaker job (if the
definition sends none) or without it (if it sends it), and compares the two ``result`` values.
Only ``result`` is compared: "Your automated processes should only rely on the value of the
result field value (OK, FAIL). Do not rely on the exact order, count, or wording of diagnostic
messages" (API reference, ValidateStateMachineDefinition).

What an answer proves. ``FAIL`` is "errors that would prevent you from creating or updating your
state machine" and "Step Functions will implicitly perform the same syntax check when you invoke
CreateStateMachine and UpdateStateMachine" (same page): a refusal is a refusal. ``OK`` is weaker:
the API "Validates the syntax of a state machine definition", and AWS documents nowhere whether
that check includes the list of fields an optimized integration supports (the
``SCHEMA_VALIDATION_FAILED: The field "X" is not supported by Step Functions`` that
``CreateStateMachine`` answers: aws/amazon-sagemaker-examples#4492).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from smtrain.core import contract
from smtrain.core.assembly import every_state

SETTING = contract.SAGEMAKER_RETRY_SETTING
#: What the probe sends: the count the stack sent before the setting existed (any of 1-30 would do).
PROBE_ATTEMPTS = 2

#: The optimized integration's create calls, and where each takes a job's request fields.
_SAGEMAKER_CREATE = re.compile(r"arn:[\w-]+:states:::sagemaker:(?P<api>createTrainingJob|"
                               r"createHyperParameterTuningJob)(?:\.sync)?")
_JOB_FIELDS = {"createTrainingJob": (), "createHyperParameterTuningJob": ("TrainingJobDefinition",)}

Answer = Mapping[str, Any]


def job_fields(definition: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per SageMaker create task: the dict its job's request fields are written in (static
    ``Parameters`` only; fields that arrive through a ``.$`` path are not the validator's)."""
    found = {}
    for name, state in every_state(definition):
        match = _SAGEMAKER_CREATE.fullmatch(str(state.get("Resource", "")))
        fields = state.get("Parameters")
        if match is None or not isinstance(fields, dict):
            continue
        for key in _JOB_FIELDS[match["api"]]:
            fields = fields.get(key)
            if not isinstance(fields, dict):
                break
        else:
            found[name] = fields
    return found


def counterpart(definition: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The tasks that send ``RetryStrategy``, and the definition's text with it on every SageMaker
    job (where none sends it) or on none (where some do); no text where there is no such job."""
    probe = json.loads(json.dumps(definition))
    fields = job_fields(probe)
    sending = sorted(name for name, job in fields.items() if "RetryStrategy" in job)
    if not fields:
        return sending, None
    for job in fields.values():
        if sending:
            job.pop("RetryStrategy", None)
        else:
            job["RetryStrategy"] = {"MaximumRetryAttempts": PROBE_ATTEMPTS}
    return sending, json.dumps(probe, separators=(",", ":"))


def report(definition_text: str, answer: Answer | None, ask: Callable[[str], Answer | None],
           say: Callable[[str], None]) -> None:
    """Ask about the counterpart of the definition whose answer is ``answer`` and say, in one
    line, what the two results mean for ``RetryStrategy``. ``ask`` validates a definition text,
    prints its answer and returns it (None: it could not ask). The exit code is the main
    validation's: a definition that deploys no ``RetryStrategy`` is not failed for it."""
    if answer is None:
        return
    try:
        definition = json.loads(definition_text)
    except json.JSONDecodeError:
        return
    sending, probe = counterpart(definition)
    if probe is None:
        return
    if sending:
        say(f"  RetryStrategy: sent by {', '.join(sending)} (setting '{SETTING}'); asking "
            "ValidateStateMachineDefinition again without it")
    else:
        say(f"  RetryStrategy: sent by no task (setting '{SETTING}' is null); asking "
            f"ValidateStateMachineDefinition again with it in {', '.join(sorted(job_fields(definition)))}")
    other = ask(probe)
    if other is None:
        return
    with_it, without_it = (answer, other) if sending else (other, answer)
    if with_it["result"] == "OK":
        say("  RetryStrategy: ValidateStateMachineDefinition accepts the definition with it (result OK); "
            "that API checks the definition's syntax, and AWS does not document whether it refuses a "
            "field the SageMaker integration does not support, so `cdk deploy` may still refuse it")
    elif without_it["result"] == "OK":
        change = (f"set '{SETTING}' to null in the training context of cdk.json" if sending
                  else f"keep setting '{SETTING}' null")
        say("  RetryStrategy: ValidateStateMachineDefinition refuses the definition with it (result FAIL) "
            f"and accepts it without: {change}")
    else:
        say("  RetryStrategy: undetermined: ValidateStateMachineDefinition refuses the definition with "
            "and without it; fix the errors above first")
