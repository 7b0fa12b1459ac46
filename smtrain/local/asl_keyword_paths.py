"""moto's interpreter reads ``"RoleArn.$"`` (and every key spelt like an ASL keyword) as a path.

The Amazon States Language says of ``Parameters``: "For key-value pairs where the value is
selected using a path, the key name must end in ``.$``" (Step Functions developer guide,
"Parameters"), whatever the key is. moto's parser (ported from LocalStack) lexes some keys as
keywords of the language before it looks at the ``.$``: ``"RoleArn.$"`` is its token
``ROLEARNPATH`` (for a Map's ``ItemReader`` credentials), which its payload grammar takes as a
plain string, so the binding keeps the key ``RoleArn.$`` and the path as its literal value, and
SageMaker's model refuses the request ("Unknown parameter ... RoleArn.$"). The state machine sends
each program's jobs as that program's own role (``"RoleArn.$": "$.method.roleArn"``), which AWS
evaluates as a path.

:func:`enable` makes moto follow the rule for such keys: a binding whose key ends in ``.$`` and
whose value is a JSONPath on the state's input (``$`` or ``$.``...) is a path binding, as the
grammar makes it for every other key. Nothing else changes: a key without ``.$``, a value that is
not a string, an intrinsic function or a context path (``$$.``) are left as moto parses them
(none of the project's keyword keys takes one). moto is pinned exactly for this hook as for the
others.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.stepfunctions.parser.asl.component.common.payload.payloadvalue.payloadbinding.payload_binding import (
    PayloadBindingStringExpressionSimple,
)
from moto.stepfunctions.parser.asl.component.common.payload.payloadvalue.payloadvaluelit.payload_value_str import (
    PayloadValueStr,
)
from moto.stepfunctions.parser.asl.component.common.string.string_expression import StringJsonPath
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

_lock = threading.Lock()
_original: Any = None


def _is_input_path(value: str) -> bool:
    return value == "$" or value.startswith(("$.", "$["))


def _payload_binding_value(self: Preprocessor, ctx: Any) -> Any:
    binding = _original(self, ctx)
    value = getattr(binding, "payload_value", None)
    if binding.field.endswith(".$") and isinstance(value, PayloadValueStr) and _is_input_path(value.val):
        return PayloadBindingStringExpressionSimple(
            field=binding.field[:-2], string_expression_simple=StringJsonPath(json_path=value.val))
    return binding


def enable() -> None:
    """Read keyword keys ending in ``.$`` as paths (idempotent)."""
    global _original
    with _lock:
        if _original is None:
            _original = Preprocessor.visitPayload_binding_value
            Preprocessor.visitPayload_binding_value = _payload_binding_value
