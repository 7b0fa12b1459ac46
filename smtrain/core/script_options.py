"""Which command-line options a script program's entry point defines, read without running it.

SageMaker's training toolkit (the ``train`` program of AWS's framework images) starts a script
program's entry point with every hyperparameter of the job as a command-line argument, named
exactly as declared: ``--<name> <value>``, or ``-<name>`` for a one-character name
(sagemaker-training, ``sagemaker_training/mapping.py``, ``to_cmd_args``, called with
``environment.hyperparameters`` by ``sagemaker_training/entry_point.py``; the framework's own
``sagemaker_*`` hyperparameters are left out). A script that reads them with
``argparse.parse_known_args`` silently drops an option it does not define, so a manifest's
``learning-rate`` against a script's ``--learning_rate`` trains at the script's default.

:func:`read_options` parses (Python's :mod:`ast`; nothing is imported or run) the entry point
and the modules of the program's folder (and its shared folders) that it imports, transitively,
and collects the option strings of every ``<anything>.add_argument("-x", "--y", ...)`` call.
It answers ``None``, meaning "do not judge", where the script reads its hyperparameters some
other way or where the options cannot be known from the text:

- no ``add_argument`` call with an option string at all (a script that parses ``sys.argv``
  itself, as ``smtrain new-program``'s skeleton does);
- a module reads ``SM_HPS`` or ``hyperparameters.json`` (the toolkit's environment variable and
  file with the same hyperparameters; sagemaker-training, ``environment.py``);
- an ``add_argument`` whose names are not string literals (``add_argument(*names)``, an
  f-string), or a file that does not parse.

Standard library only (the core's rule).
"""

from __future__ import annotations

import ast
import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Text whose presence in a scanned module means the script reads its hyperparameters (also)
#: from the toolkit's environment variable or SageMaker's file: the check is skipped.
OTHER_SOURCES: Final = ("SM_HPS", "SM_HP_", "SM_TRAINING_ENV", "hyperparameters.json")
#: How many of a script's options an error message lists.
LISTED_OPTIONS: Final = 12


@dataclass(frozen=True)
class ScriptOptions:
    """The option strings (``--epochs``, ``-C``) the scanned modules define, and the modules."""

    options: frozenset[str]
    modules: tuple[Path, ...]


def toolkit_flag(name: str) -> str:
    """The argument the toolkit passes for hyperparameter ``name`` (``to_cmd_args``)."""
    return f"--{name}" if len(name) > 1 else f"-{name}"


def read_options(entry_point: Path, *,
                 packages: Mapping[str, Path] | None = None) -> ScriptOptions | None:
    """The options defined by ``entry_point`` and the modules it imports from its own folder
    (on its ``sys.path``: it runs as a script) or from ``packages`` (top-level name -> folder:
    the shared folders packed beside it), or None where the check must not judge (see the
    module's docstring)."""
    folder = entry_point.resolve().parent
    options: set[str] = set()
    seen: list[Path] = []
    pending = [entry_point.resolve()]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.append(path)
        facts = _module_facts(path)
        if facts is None:
            return None
        found, modules = facts
        if found is None:
            return None
        options |= found
        pending.extend(_local_files(modules, folder, packages or {}))
    if not options:
        return None
    return ScriptOptions(options=frozenset(options), modules=tuple(seen))


def hyperparameter_problems(names: Iterable[str], options: ScriptOptions,
                            script: str) -> Mapping[str, str]:
    """For each hyperparameter name the toolkit would pass as an option the script lacks: why,
    in one line (the closest option suggested). ``script`` names the entry point in the text."""
    listed = sorted(options.options, key=lambda o: (o.lstrip("-").lower(), o))
    shown = ", ".join(listed[:LISTED_OPTIONS]) + (", ..." if len(listed) > LISTED_OPTIONS else "")
    problems: dict[str, str] = {}
    for name in names:
        flag = toolkit_flag(name)
        if flag in options.options:
            continue
        closest = difflib.get_close_matches(flag, listed, n=1, cutoff=0.6)
        hint = f"did you mean {closest[0]}? " if closest else ""
        problems[name] = (f"the script {script} has no option {flag} ({hint}it reads {shown}); "
                          "SageMaker's training toolkit passes each hyperparameter as --<name>, "
                          "exactly as declared, so the script would never get this one")
    return problems


def _module_facts(path: Path) -> tuple[frozenset[str] | None, tuple[str, ...]] | None:
    """The option strings of ``path`` (None: judge nothing) and the module names its imports
    name; None where the file cannot be read or parsed."""
    try:
        text = path.read_bytes()
    except OSError:
        return None
    return _facts_of_text(path, text)


@functools.lru_cache(maxsize=1024)
def _facts_of_text(path: Path, text: bytes) -> tuple[frozenset[str] | None, tuple[str, ...]] | None:
    """:func:`_module_facts` of a file's text, once per process and text: the CLI run in-process,
    or a notebook, checks the same manifests' scripts again and again."""
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError):
        return None
    found = _options_of(tree)
    return None if found is None else frozenset(found), tuple(_imported_modules(tree))


def _options_of(tree: ast.AST) -> set[str] | None:
    """Option strings of the ``add_argument`` calls in ``tree``; None: judge nothing."""
    options: set[str] = set()
    # Docstrings and other bare strings are prose: they may name SM_HPS without reading it.
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in prose and any(s in node.value for s in OTHER_SOURCES)):
            return None
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        names = [arg.value for arg in node.args
                 if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        if len(names) != len(node.args):
            return None  # add_argument(*names), a variable, an f-string: unknowable here
        options.update(n for n in names if n.startswith("-"))
    return options


def _imported_modules(tree: ast.AST) -> list[str]:
    """The module names ``tree``'s absolute imports name (the entry point runs as a script,
    with its folder on ``sys.path``)."""
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
            # `from package import module` may name a module as well as an attribute.
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _local_files(modules: Iterable[str], folder: Path, packages: Mapping[str, Path]) -> list[Path]:
    """The files of ``folder`` and ``packages`` that the imported ``modules`` are."""
    found: list[Path] = []
    for module in modules:
        parts = module.split(".")
        package = packages.get(parts[0])
        base = folder if package is None else package.parent
        packages_run = [base.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
        for candidate in (*packages_run, base.joinpath(*parts[:-1], f"{parts[-1]}.py"),
                          base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                found.append(candidate.resolve())
    return found
