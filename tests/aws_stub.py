"""A loopback stand-in for the AWS operations moto does not answer (moto 5.2.5 raises
NotImplementedError for Step Functions' ValidateStateMachineDefinition and IAM's
SimulateCustomPolicy / SimulatePrincipalPolicy).

Every request is decoded with botocore's service model and checked with
``botocore.validate.ParamValidator`` plus the model's enums and maximums, which ParamValidator
does not check (a request AWS would refuse for its shape is answered with AWS's error, so no test
passes on a malformed call), and every response is checked the same way
against the operation's output shape before it is serialized in the service's protocol (JSON for
Step Functions, query/XML for IAM), so the SDK parses it as it parses AWS's.

What the answers *say* is this module's, not AWS's:

- ValidateStateMachineDefinition: JSON syntax (INVALID_JSON_DESCRIPTION), the ASL grammar of
  moto's Step Functions parser, and the static ``Parameters`` of SageMaker optimized integrations
  against botocore's request shapes (SCHEMA_VALIDATION_FAILED, 'The field "X" is not supported by
  Step Functions', the wording design.md quotes), less any field a test marks unsupported (Step
  Functions' own list of supported fields can lag botocore's model; whether the real
  validator checks that list at all is not documented); plus any diagnostics a test adds.
- Simulate*: a small evaluator of the documented rules (Action/NotAction, Resource/NotResource with
  ``*`` and ``?``, the condition operators of tests/iam_policy_eval.py, explicit deny wins); principals'
  policies, SCP denials and boundary denials are set by the test.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

from tests.iam_policy_eval import condition_holds

Diagnostic = dict[str, str]

_SESSION = botocore.session.get_session()
SFN = _SESSION.get_service_model("stepfunctions")
IAM = _SESSION.get_service_model("iam")
SAGEMAKER = _SESSION.get_service_model("sagemaker")


class StubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def validate(params: Mapping[str, Any], shape: Shape, what: str) -> None:
    """botocore's ParamValidator (required members, unknown members, types, minimums), plus the
    model's enums and maximums, which ParamValidator leaves to the service."""
    report = ParamValidator().validate(dict(params), shape)
    if report.has_errors():
        raise StubError(400, "ValidationException", f"{what}: {report.generate_report()}")
    problems = list(model_constraints(params, shape, "params"))
    if problems:
        raise StubError(400, "ValidationException", f"{what}: " + "; ".join(problems))


def model_constraints(value: Any, shape: Shape, name: str) -> Iterator[str]:
    """Enum membership and ``max`` (length, size or value) as the service model states them."""
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                yield from model_constraints(item, shape.members[key], f"{name}.{key}")
        return
    if shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from model_constraints(item, shape.member, f"{name}[{index}]")
    if shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from model_constraints(key, shape.key, f"{name} key {key!r}")
            yield from model_constraints(item, shape.value, f"{name}[{key!r}]")
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        yield f"{name}: {value!r} is not one of {enum}"
    maximum = shape.metadata.get("max")
    if maximum is not None:
        size = value if isinstance(value, int | float) and not isinstance(value, bool) else len(value)
        if size > maximum:
            yield f"{name}: {size} is above the maximum of {maximum}"


# -- IAM's query protocol, both ways -------------------------------------------------------------
def decode_query(shape: Shape, form: Mapping[str, str], prefix: str = "") -> Any:
    """The inverse of botocore's query serializer (``Name.member.N``, ``Name.Field``)."""
    if shape.type_name == "structure":
        result = {}
        for name, member in shape.members.items():
            value = decode_query(member, form, f"{prefix}.{name}" if prefix else name)
            if value is not None:
                result[name] = value
        return result if result or not prefix else None
    if shape.type_name == "list":
        items = []
        index = 1
        while any(key == f"{prefix}.member.{index}" or key.startswith(f"{prefix}.member.{index}.")
                  for key in form):
            items.append(decode_query(shape.member, form, f"{prefix}.member.{index}"))
            index += 1
        if not items and form.get(prefix) == "":
            return []
        return items or None
    if prefix not in form:
        return None
    text = form[prefix]
    if shape.type_name in ("integer", "long"):
        return int(text)
    if shape.type_name == "boolean":
        return text == "true"
    return text


def _query_keys(shape: Shape, prefix: str = "") -> Iterator[re.Pattern[str]]:
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            yield from _query_keys(member, f"{prefix}.{name}" if prefix else name)
    elif shape.type_name == "list":
        yield re.compile(re.escape(prefix) + r"$")
        yield from _query_keys(shape.member, f"{prefix}.member.N")
    else:
        yield re.compile(re.escape(prefix).replace(r"\.member\.N", r"\.member\.\d+") + "$")


def encode_xml(shape: Shape, value: Any) -> str:
    if shape.type_name == "structure":
        return "".join(f"<{name}>{encode_xml(shape.members[name], item)}</{name}>" for name, item in value.items())
    if shape.type_name == "list":
        return "".join(f"<member>{encode_xml(shape.member, item)}</member>" for item in value)
    if shape.type_name == "boolean":
        return "true" if value else "false"
    return escape(str(value))


# -- the evaluator -------------------------------------------------------------------------------
def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _listed(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, list[str]], missing: set[str]) -> bool:
    """Each condition as tests/iam_policy_eval.py evaluates it (one evaluator of the documented
    operators); a key an operator needs and the request lacks is reported missing, as the
    simulator's MissingContextValues."""
    for operator, keys in conditions.items():
        for key, expected in keys.items():
            actual = context.get(key.lower())
            needs_key = not (operator.endswith("IfExists") or operator.startswith("ForAllValues:")
                             or operator == "Null" or "Not" in operator)
            if actual is None and needs_key:
                missing.add(key)
                return False
            try:
                holds = condition_holds(operator, key, expected, {} if actual is None else {key: actual})
            except NotImplementedError:
                raise StubError(500, "StubLimitation",
                                f"the stub does not evaluate condition operator {operator}") from None
            if not holds:
                return False
    return True


def decide(documents: list[str], action: str, resource: str, context: Mapping[str, list[str]]) -> tuple[str, set[str]]:
    allowed, missing = False, set[str]()
    for document in documents:
        statements = json.loads(document)["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            if "Action" in statement:
                if not any(_glob(a, action, case=False) for a in _listed(statement["Action"])):
                    continue
            elif any(_glob(a, action, case=False) for a in _listed(statement["NotAction"])):
                continue
            if "Resource" in statement:
                if not any(_glob(r, resource) for r in _listed(statement["Resource"])):
                    continue
            elif any(_glob(r, resource) for r in _listed(statement["NotResource"])):
                continue
            if not _conditions_hold(statement.get("Condition", {}), context, missing):
                continue
            if statement["Effect"] == "Deny":
                return "explicitDeny", missing
            allowed = True
    return ("allowed" if allowed else "implicitDeny"), (set() if allowed else missing)


# -- ValidateStateMachineDefinition ----------------------------------------------------------------
_SAGEMAKER_OPTIMIZED = re.compile(r"arn:aws[\w-]*:states:::sagemaker:(\w+)(?:\.sync|\.waitForTaskToken)?")


def _field_problems(value: Any, shape: Shape, location: str,
                    unsupported: frozenset[str] = frozenset()) -> Iterator[Diagnostic]:
    if shape.type_name != "structure" or not isinstance(value, dict):
        return
    for key, item in value.items():
        name = key[:-2] if key.endswith(".$") else key
        if name not in shape.members or name in unsupported:
            yield {"severity": "ERROR", "code": "SCHEMA_VALIDATION_FAILED", "location": location,
                   "message": f'The field "{name}" is not supported by Step Functions'}
        elif not key.endswith(".$"):
            member = shape.members[name]
            if member.type_name == "list" and isinstance(item, list):
                for index, element in enumerate(item):
                    yield from _field_problems(element, member.member, f"{location}/{name}/{index}", unsupported)
            else:
                yield from _field_problems(item, member, f"{location}/{name}", unsupported)


def default_diagnostics(definition: str, unsupported: frozenset[str] = frozenset()) -> list[Diagnostic]:
    try:
        document = json.loads(definition)
    except json.JSONDecodeError as error:
        return [{"severity": "ERROR", "code": "INVALID_JSON_DESCRIPTION", "message": str(error)}]
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    from smtrain.local import asl_parse_cache

    asl_parse_cache.enable()  # a definition the stub checked before is not parsed again
    try:
        AmazonStateLanguageParser.parse(definition)
    except Exception as error:  # the parser's grammar errors
        return [{"severity": "ERROR", "code": "SCHEMA_VALIDATION_FAILED", "message": str(error)[:1000]}]
    diagnostics: list[Diagnostic] = []
    for name, state in document.get("States", {}).items():
        match = _SAGEMAKER_OPTIMIZED.fullmatch(str(state.get("Resource", "")))
        if match and isinstance(state.get("Parameters"), dict):
            operation = match.group(1)[0].upper() + match.group(1)[1:]
            shape = SAGEMAKER.operation_model(operation).input_shape
            diagnostics.extend(_field_problems(state["Parameters"], shape, f"/States/{name}/Parameters",
                                               unsupported))
    return diagnostics


# -- the server ------------------------------------------------------------------------------------
@dataclass
class AwsStub:
    """What the stub answers; tests change these fields."""

    extra_diagnostics: list[Diagnostic] = field(default_factory=list)
    #: Fields of SageMaker requests the validator answers as not supported by Step Functions.
    unsupported_fields: set[str] = field(default_factory=set)
    principal_policies: dict[str, list[str]] = field(default_factory=dict)
    scp_denied_actions: set[str] = field(default_factory=set)
    boundary_denied_actions: set[str] = field(default_factory=set)
    denied_operations: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    endpoint: str = ""

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == operation]

    # Step Functions
    def validate_state_machine_definition(self, params: Mapping[str, Any]) -> dict[str, Any]:
        diagnostics = default_diagnostics(params["definition"], frozenset(self.unsupported_fields)) \
            + list(self.extra_diagnostics)
        if params.get("severity") == "ERROR":
            diagnostics = [d for d in diagnostics if d["severity"] == "ERROR"]
        limit = params.get("maxResults") or 100
        result = "FAIL" if any(d["severity"] == "ERROR" for d in diagnostics) else "OK"
        return {"result": result, "diagnostics": diagnostics[:limit], "truncated": len(diagnostics) > limit}

    # IAM
    def simulate_custom_policy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._simulate(params, list(params["PolicyInputList"]), principal=False)

    def simulate_principal_policy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        source = params["PolicySourceArn"]
        if source not in self.principal_policies:
            raise StubError(404, "NoSuchEntity", f"The role with name {source.rsplit('/', 1)[-1]} cannot be found.")
        return self._simulate(params, self.principal_policies[source] + list(params.get("PolicyInputList", [])),
                              principal=True)

    def _simulate(self, params: Mapping[str, Any], documents: list[str], *, principal: bool) -> dict[str, Any]:
        for document in documents:
            try:
                json.loads(document)
            except json.JSONDecodeError:
                raise StubError(400, "MalformedPolicyDocument", "policy is not JSON") from None
        context: dict[str, list[str]] = {}
        for entry in params.get("ContextEntries", []):
            context[entry["ContextKeyName"].lower()] = list(entry["ContextKeyValues"])
        results = []
        for action in params["ActionNames"]:
            for resource in params.get("ResourceArns", ["*"]):
                decision, missing = decide(documents, action, resource, context)
                result: dict[str, Any] = {"EvalActionName": action, "EvalResourceName": resource,
                                          "EvalDecision": decision, "MatchedStatements": [],
                                          "MissingContextValues": sorted(missing)}
                if principal:
                    allowed_by_scp = action not in self.scp_denied_actions
                    result["OrganizationsDecisionDetail"] = {"AllowedByOrganizations": allowed_by_scp}
                    if action in self.boundary_denied_actions:
                        result["PermissionsBoundaryDecisionDetail"] = {"AllowedByPermissionsBoundary": False}
                    if not allowed_by_scp or action in self.boundary_denied_actions:
                        result["EvalDecision"] = "implicitDeny"
                results.append(result)
        return {"EvaluationResults": results, "IsTruncated": False}


def _handler(stub: AwsStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            target = self.headers.get("X-Amz-Target", "")
            if "Credential=" not in self.headers.get("Authorization", ""):
                self._send(403, "application/json", json.dumps({"__type": "MissingAuthenticationTokenException",
                                                                "message": "unsigned request"}))
            elif target.startswith("AWSStepFunctions."):
                self._json(target.split(".", 1)[1], body)
            else:
                self._query(body)

        def _send(self, status: int, content_type: str, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

        def _operation(self, service: Any, name: str) -> OperationModel:
            if name not in service.operation_names:
                raise StubError(400, "UnknownOperationException", f"unknown operation {name}")
            if name in stub.denied_operations:
                raise StubError(403, "AccessDenied" if service is IAM else "AccessDeniedException",
                                f"not authorized to perform {name}")
            method = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            if not hasattr(stub, method):
                raise StubError(400, "UnknownOperationException", f"the stub does not answer {name}")
            model: OperationModel = service.operation_model(name)
            return model

        def _answer(self, operation: OperationModel, params: dict[str, Any]) -> dict[str, Any]:
            validate(params, operation.input_shape, f"{operation.name} request")
            stub.requests.append((operation.name, params))
            response: dict[str, Any] = getattr(stub, re.sub(r"(?<!^)(?=[A-Z])", "_", operation.name).lower())(params)
            try:
                validate(response, operation.output_shape, f"{operation.name} response")
            except StubError as error:
                raise StubError(500, "StubBug", f"the stub's own answer breaks the model: {error}") from None
            return response

        def _json(self, name: str, body: str) -> None:
            try:
                operation = self._operation(SFN, name)
                self._send(200, "application/x-amz-json-1.0",
                           json.dumps(self._answer(operation, json.loads(body or "{}"))))
            except StubError as error:
                self._send(error.status, "application/x-amz-json-1.0",
                           json.dumps({"__type": error.code, "message": error.message}))

        def _query(self, body: str) -> None:
            form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
            try:
                if form.pop("Version", None) != IAM.api_version:
                    raise StubError(400, "InvalidParameterValue", "missing or wrong Version")
                operation = self._operation(IAM, form.pop("Action", ""))
                allowed = list(_query_keys(operation.input_shape))
                unknown = [key for key in form if not any(p.match(key) for p in allowed)]
                if unknown:
                    raise StubError(400, "InvalidParameter", f"unknown parameters {unknown}")
                response = self._answer(operation, decode_query(operation.input_shape, form))
                wrapper = operation.output_shape.serialization["resultWrapper"]
                self._send(200, "text/xml", (
                    f'<{operation.name}Response xmlns="{IAM.metadata["xmlNamespace"]}">'
                    f"<{wrapper}>{encode_xml(operation.output_shape, response)}</{wrapper}>"
                    f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                    f"</{operation.name}Response>"))
            except StubError as error:
                kind = "Receiver" if error.status >= 500 else "Sender"
                self._send(error.status, "text/xml", (
                    f'<ErrorResponse xmlns="{IAM.metadata["xmlNamespace"]}"><Error><Type>{kind}</Type>'
                    f"<Code>{error.code}</Code><Message>{escape(error.message)}</Message></Error>"
                    f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"))

    return Handler


@contextmanager
def serve(stub: AwsStub | None = None) -> Iterator[AwsStub]:
    stub = stub or AwsStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
