"""Summarise a synthesized app: stacks, the state machine's flow, and how to start a run.

    python -m infra.describe cdk.out
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smtrain.core import contract, input_rules
from smtrain.core.assembly import (
    load_templates,
    placeholder_resolver,
    render_definition,
    state_machine_definitions,
)


def describe(outdir: Path) -> str:
    templates = load_templates(outdir)
    lines = ["Stacks:"]
    definition: dict[str, Any] | None = None
    for stack_id, template in templates.items():
        types: dict[str, int] = {}
        for resource in template["Resources"].values():
            types[resource["Type"]] = types.get(resource["Type"], 0) + 1
        summary = ", ".join(f"{count} {name.split('::', 1)[1]}" for name, count in sorted(types.items()))
        lines.append(f"  {stack_id}: {summary}")
        for definition_string in state_machine_definitions(template).values():
            definition = render_definition(definition_string, placeholder_resolver())
    if definition is None:
        raise ValueError("no state machine in the synthesized app")
    states = definition["States"]
    lines += ["", f"State machine: {len(states)} states, starting at {definition['StartAt']}"]
    for name, state in states.items():
        if state["Type"] == "Task":
            lines.append(f"  Task  {name:<26} {state['Resource']}")
        elif state["Type"] == "Fail":
            lines.append(f"  Fail  {name:<26} error {state.get('Error') or state.get('ErrorPath')}")
    defaults = states["ReadInput"]["Parameters"]["defaults"]
    programs = [rule["StringEquals"] for rule in states["ChooseProgram"]["Choices"]]
    lines += ["", f"Programs ({len(programs)}): {', '.join(programs)}",
              "", f"Execution input (every field but '{contract.PROGRAM}' has a default):",
              "  " + json.dumps({contract.PROGRAM: " | ".join(programs), **defaults})]
    check = [name for name, state in states.items() if state.get("QueryLanguage") == "JSONata"
             and "inputCheck" in state.get("Assign", {})]
    lines += ["", f"Input checks before any job starts (state {', '.join(check)}: "
                  "smtrain/core/input_rules.py, the rules the CLI applies too):"]
    lines += [f"  - {rule.replace('``', '')}" for rule in _rules()]
    example = json.dumps({contract.PROGRAM: programs[0]})
    lines += ["", "Start a run once deployed:",
              "  aws stepfunctions start-execution --state-machine-arn <StateMachineArn output> \\",
              f"    --name my-first-run --input '{example}'"]
    return "\n".join(lines)


def _rules() -> list[str]:
    """The list of rules in :mod:`smtrain.core.input_rules`' docstring, one line each."""
    rules: list[str] = []
    for line in (input_rules.__doc__ or "").splitlines():
        if line.startswith("- "):
            rules.append(line[2:])
        elif rules and line.startswith("  "):
            rules[-1] += " " + line.strip()
        elif rules:
            break
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, nargs="?", default=Path("cdk.out"))
    args = parser.parse_args()
    try:
        print(describe(args.outdir))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
