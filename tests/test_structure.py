"""The house: one core that imports nothing heavy, three packages above it, no import cycle.

Read from the code itself with ``ast``: every import statement of the project's modules counts,
those inside functions (the CLI's lazy imports) and under ``TYPE_CHECKING`` included.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

#: The packages of the project and what each is.
CORE = "smtrain.core"  # the contract, the manifests, every input rule: imported by all
CLI = "smtrain.cli"  # the smtrain command
EMULATOR = "smtrain.local"  # the offline engine
CDK_APP = "infra"  # the CDK app (app.py too)
#: What the core may import besides the standard library and itself: small pure-Python
#: libraries (the rules' JSONata evaluator, the manifests' JSON Schema validator).
CORE_LIBRARIES = {"jsonata", "jsonschema"}
#: The emulator's public entries, which the CLI's --local commands use: the engine and its
#: progress printer, the staleness check of cdk.out, the offline registry and its error (with the
#: S3 stand-in it reads reports and archives from), the executions' records (`smtrain status
#: --local`), and the strict front end's model checks (AWS's contract, which the CLI applies to a
#: request too).
EMULATOR_ENTRIES = {"smtrain.local.engine", "smtrain.local.demo", "smtrain.local.staleness",
                    "smtrain.local.model_registry", "smtrain.local.backend",
                    "smtrain.local.sagemaker_model", "smtrain.local.execution_records"}


def _modules() -> dict[str, Path]:
    files = [ROOT / "app.py", *sorted((ROOT / "infra").rglob("*.py")), *sorted((ROOT / "smtrain").rglob("*.py"))]
    modules = {}
    for path in files:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _imported(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute (the project has no relative imports)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}: relative import"
            # ``from package import module`` imports the module (as ``import package.module``
            # does); ``from module import name`` the module.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names
                          if f"{node.module}.{alias.name}" in MODULES]
            yield from submodules
            if len(submodules) < len(node.names):
                yield node.module


def _project_imports(module: str) -> set[str]:
    return {name for name in _imported(MODULES[module]) if name in MODULES}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycle() -> None:
    graph = {module: _project_imports(module) for module in MODULES}
    # Tarjan's strongly connected components: any of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph[module]:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_core_imports_only_the_standard_library_and_small_pure_python_libraries() -> None:
    core = [module for module in MODULES if _in(module, CORE)]
    assert {"smtrain.core.contract", "smtrain.core.input_rules", "smtrain.core.programs",
            "smtrain.core.budget", "smtrain.core.registration", "smtrain.core.assembly"} <= set(core)
    for module in core:
        for name in _imported(MODULES[module]):
            top = name.split(".")[0]
            assert (top in sys.stdlib_module_names or top == "__future__" or top in CORE_LIBRARIES
                    or _in(name, CORE)), f"{module} imports {name}"


def test_each_package_stands_on_the_core_and_not_on_another() -> None:
    for module in MODULES:
        imports = _project_imports(module)
        if _in(module, EMULATOR):
            assert not {i for i in imports if _in(i, CLI) or _in(i, CDK_APP)}, module
        if _in(module, CDK_APP) or module == "app":
            assert not {i for i in imports if _in(i, CLI) or _in(i, EMULATOR)}, module
        if _in(module, CLI):
            assert not {i for i in imports if _in(i, CDK_APP)}, module
            assert {i for i in imports if _in(i, EMULATOR)} <= EMULATOR_ENTRIES, module


def test_cdk_and_aws_sdks_stay_where_they_belong() -> None:
    """Only the CDK app starts Node (aws_cdk imports jsii); the emulator and the CLI read the
    synthesized assembly through the core's one reader (smtrain/core/assembly.py)."""
    for module, path in MODULES.items():
        tops = {name.split(".")[0] for name in _imported(path)}
        if not (_in(module, CDK_APP) or module == "app"):
            assert not tops & {"aws_cdk", "constructs", "cdk_nag"}, module
        if _in(module, CORE):
            assert not tops & {"boto3", "botocore", "moto", "mlflow"}, module


def _aws_cdk_file(module: str) -> Path:
    import aws_cdk

    path = Path(aws_cdk.__file__).parent.parent / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _aws_cdk_imports(path: Path) -> set[str]:
    """The aws_cdk modules a file of ours imports, in every spelling (``import aws_cdk.aws_iam as
    iam``, ``from aws_cdk.aws_iam import Role``, ``from aws_cdk import aws_iam``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "aws_cdk"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aws_cdk":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if _aws_cdk_file(f"{node.module}.{alias.name}").exists()}
    return found


#: How jsii's generated modules import another module (``import aws_cdk.interfaces as
#: _interfaces_8ca7e747``) and declare a class with its bases (read as text: parsing these
#: modules, several MB each, would take seconds).
_JSII_IMPORT = re.compile(r"^\s*import ([\w.]+) as (\w+)\s*$", re.MULTILINE)
_JSII_CLASS = re.compile(r"^class \w+\((.*?)\):", re.MULTILINE | re.DOTALL)


def _base_modules(module: str) -> set[str]:
    """The aws_cdk modules the bases of ``module``'s classes are defined in."""
    text = _aws_cdk_file(module).read_text()
    names = {alias: imported for imported, alias in _JSII_IMPORT.findall(text)}
    found = {names[name] for bases in _JSII_CLASS.findall(text)
             for name in re.findall(r"\b(\w+)\.\w+", bases) if name in names}
    return {m for m in found if m.split(".")[0] == "aws_cdk"}


def test_mypy_analyses_every_aws_cdk_module_the_project_uses() -> None:
    """pyproject.toml skips aws_cdk's modules (each several MB; mypy's cold cache spent most of
    CI's lint on them) except those the project imports and those their classes derive from: a
    module imported but not listed would be read as Any, its calls unchecked, and a base class
    skipped would make every attribute of its subclasses Any (``role.role_arnn`` unchecked)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    analysed = {module for override in config["overrides"] if override.get("follow_imports") == "normal"
                for module in override["module"]}
    checked = [ROOT / file for file in config["files"] if (ROOT / file).is_file()]
    checked += [path for folder in config["files"] if (ROOT / folder).is_dir()
                for path in (ROOT / folder).rglob("*.py") if "fixtures" not in path.parts]
    imported = set().union(*(_aws_cdk_imports(path) for path in checked))
    assert {"aws_cdk", "aws_cdk.aws_iam", "aws_cdk.aws_stepfunctions"} <= imported
    needed, todo = set(), sorted(imported)
    while todo:
        module = todo.pop()
        if module not in needed:
            needed.add(module)
            todo.extend(_base_modules(module) - needed)
    assert {"aws_cdk.interfaces", "aws_cdk.interfaces.aws_iam"} <= needed  # IRole's bases
    assert needed <= analysed, sorted(needed - analysed)
    assert analysed <= needed, f"listed but not needed: {sorted(analysed - needed)}"
