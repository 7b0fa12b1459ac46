"""The documentation keeps its promises: README.md, CHANGELOG.md and docs/*.md.

- every relative Markdown link resolves to a file or folder of the repository, and a ``#anchor``
  (or a bare ``#anchor``) names a heading of the Markdown file it points at (GitHub's slugs);
  external links (``https:``, ``mailto:``, ...) are not fetched;
- every ``make TARGET`` they mention is a target of the Makefile;
- every ``smtrain COMMAND [SUBCOMMAND]`` they show as code is a command of the CLI's parser;
- the README stays short enough to read to the end.

Code spans and fenced blocks are told apart from prose, so a link or command inside code is not
taken for prose and the other way round. ``smtrain`` commands are looked for in code only (in
prose, "smtrain" is the project's name); ``make`` in prose counts unless an English word follows
it (``PROSE_AFTER_MAKE``). Setext headings (underlined with ``===``) are not read: use ``#``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from smtrain.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

#: Words that follow "make" in English prose ("the calls the roles make them"), never a target.
PROSE_AFTER_MAKE = frozenset({
    "a", "an", "any", "every", "it", "its", "no", "one", "sense", "sure", "that", "the", "them",
    "these", "this", "those", "up", "use",
})

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
_INLINE_LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*(<[^>\n]*>|\S+)", re.MULTILINE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ID = re.compile(r"<[a-zA-Z][^>]*?\s(?:id|name)=[\"']([^\"']+)[\"']")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_MAKE_TARGET_LINE = re.compile(r"^([a-zA-Z0-9_.-]+)[ \t]*:(?!=)", re.MULTILINE)
_PHONY = re.compile(r"^\.PHONY[ \t]*:(.*)$", re.MULTILINE)
# `make [-options] [VAR=value ...] target`; not cmake, --make or make.py; a full stop is not the target's.
_TARGET = r"([A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?)"
_MAKE_CALL = re.compile(r"(?<![\w./-])make((?:\s+(?:-\S+|[A-Za-z_][A-Za-z0-9_]*=\S+))*)\s+" + _TARGET)
_MAKE_IN_PROSE = re.compile(r"(?<![\w./-])make[ \t\n]+" + _TARGET)
# `smtrain word [word]` at the start of a code fragment or after whitespace, `(`, `|`, `;` or `&`:
# not smtrain:execution, smtrain.program, smtrain/core, s3://.../smtrain or SMTRAIN_...
_SMTRAIN_CALL = re.compile(r"(?:^|(?<=[\s(|;&]))smtrain[ \t\n]+([a-z][\w-]*)(?:[ \t\n]+([a-z][\w-]*))?")


@dataclass(frozen=True)
class Fragment:
    """Code: a fenced block's line or an inline code span, and the line it starts on."""

    line: int
    text: str


@dataclass(frozen=True)
class Markdown:
    """A Markdown file split into prose (code blanked, offsets kept) and code fragments."""

    path: Path
    unfenced: str  # fenced blocks blanked
    prose: str  # fenced blocks and code spans blanked
    code: tuple[Fragment, ...]

    @classmethod
    def read(cls, path: Path) -> Markdown:
        return cls.parse(path, path.read_text(encoding="utf-8"))

    @classmethod
    def parse(cls, path: Path, text: str) -> Markdown:
        prose_lines: list[str] = []
        code: list[Fragment] = []
        fence: str | None = None
        for number, line in enumerate(text.split("\n"), start=1):
            opening = _FENCE.match(line)
            if fence is None and opening:
                fence = opening.group(1)
            elif fence is not None:
                closing = _FENCE.match(line)
                if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) \
                        and not line.strip()[len(closing.group(1)):].strip():
                    fence = None
                else:
                    code.append(Fragment(number, line))
            else:
                prose_lines.append(line)
                continue
            prose_lines.append("")
        unfenced = "\n".join(prose_lines)
        for span in _CODE_SPAN.finditer(unfenced):
            code.append(Fragment(line_of(unfenced, span.start(2)), span.group(2)))
        prose = _CODE_SPAN.sub(lambda span: re.sub(r"[^\n]", " ", span.group(0)), unfenced)
        return cls(path, unfenced, prose, tuple(sorted(code, key=lambda fragment: fragment.line)))

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix() if self.path.is_relative_to(ROOT) else str(self.path)

    def anchors(self) -> set[str]:
        """The anchors GitHub gives this file: one per heading, plus HTML ids and names."""
        found: set[str] = set()
        seen: dict[str, int] = {}
        for line in self.unfenced.split("\n"):
            heading = _HEADING.match(line)
            if heading:
                slug = github_slug(heading.group(2))
                count = seen.get(slug, 0)
                seen[slug] = count + 1
                found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(_HTML_ID.findall(self.prose))
        return found


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links as their text), lower-case, only letters,
    digits, spaces, hyphens and underscores kept, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def documentation() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def link_problems(doc: Markdown, root: Path = ROOT) -> list[str]:
    """Each relative link that does not resolve, or whose anchor names no heading there."""
    targets = [(match.start(1), match.group(1)) for match in _INLINE_LINK.finditer(doc.prose)]
    targets += [(match.start(1), match.group(1)) for match in _REFERENCE_DEFINITION.finditer(doc.prose)]
    problems = []
    for offset, raw in sorted(targets):
        target = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
        if _SCHEME.match(target):
            continue  # external: not fetched
        where = f"{doc.name}:{line_of(doc.prose, offset)}: link ({raw})"
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part.split("?", 1)[0])
        resolved = (doc.path.parent / path_part).resolve() if path_part else doc.path
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: no such file or folder")
            continue
        if anchor and resolved.suffix == ".md" and resolved.is_file():
            anchors = Markdown.read(resolved).anchors()
            if unquote(anchor) not in anchors:
                problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def make_targets(makefile: str) -> set[str]:
    targets = set(_MAKE_TARGET_LINE.findall(makefile))
    for phony in _PHONY.findall(makefile):
        targets.update(phony.split())
    return targets


def make_problems(doc: Markdown, targets: set[str]) -> list[str]:
    """Each `make TARGET` in code, or in prose unless an English word follows "make", that the
    Makefile does not define."""
    mentions = [
        (fragment.line + fragment.text.count("\n", 0, match.start()), match.group(2))
        for fragment in doc.code for match in _MAKE_CALL.finditer(fragment.text)
    ]
    mentions += [
        (line_of(doc.prose, match.start()), match.group(1))
        for match in _MAKE_IN_PROSE.finditer(doc.prose) if match.group(1).lower() not in PROSE_AFTER_MAKE
    ]
    return [f"{doc.name}:{line}: make {target}: the Makefile has no target {target!r}"
            for line, target in sorted(mentions) if target not in targets]


def cli_commands(parser: argparse.ArgumentParser) -> dict[str, frozenset[str]]:
    """Each command of the parser, with its subcommands (none for a command without any)."""
    return {name: frozenset(_subparsers(command)) for name, command in _subparsers(parser).items()}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def smtrain_problems(doc: Markdown, commands: dict[str, frozenset[str]]) -> list[str]:
    """Each `smtrain COMMAND [SUBCOMMAND]` shown as code that the CLI does not have."""
    problems = []
    for fragment in doc.code:
        for match in _SMTRAIN_CALL.finditer(fragment.text):
            line = fragment.line + fragment.text.count("\n", 0, match.start())
            command, subcommand = match.group(1), match.group(2)
            if command not in commands:
                problems.append(f"{doc.name}:{line}: smtrain {command}: no such command "
                                f"(commands: {', '.join(sorted(commands))})")
            elif commands[command] and subcommand is not None and subcommand not in commands[command]:
                problems.append(f"{doc.name}:{line}: smtrain {command} {subcommand}: no such subcommand "
                                f"(smtrain {command}: {', '.join(sorted(commands[command]))})")
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s) in the documentation:\n" + "\n".join(problems)


def test_documentation_files_exist() -> None:
    missing = [path.name for path in documentation() if not path.is_file()]
    assert not missing, missing
    assert len(documentation()) > 2, "docs/ holds no page"


def test_every_relative_link_resolves() -> None:
    problems = [problem for path in documentation() for problem in link_problems(Markdown.read(path))]
    assert not problems, _report(problems)


def test_every_make_target_mentioned_exists() -> None:
    targets = make_targets((ROOT / "Makefile").read_text(encoding="utf-8"))
    problems = [problem for path in documentation() for problem in make_problems(Markdown.read(path), targets)]
    assert not problems, _report(problems)


def test_every_smtrain_command_mentioned_exists() -> None:
    commands = cli_commands(build_parser())
    problems = [problem for path in documentation() for problem in smtrain_problems(Markdown.read(path), commands)]
    assert not problems, _report(problems)


def test_readme_is_short_enough_to_read_to_the_end() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference material to docs/")


# Negative controls: each check finds what it must, and only that.

def test_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Same\n\n## Same\n\n## `smtrain start`: run\n")
    readme = tmp_path / "README.md"
    text = (
        "# Title\n\n"
        "[ok](docs/page.md) [ok](docs/page.md#same-1) [ok](docs/page.md#smtrain-start-run) [ok](#title)\n"
        "[ok](docs/) [ok](https://example.com/nowhere) [ok](mailto:someone@example.com)\n"
        "`[not a link](nowhere.md)`\n\n"
        "```\n[not a link either](nowhere.md)\n```\n"
        "[bad](docs/gone.md)\n"
        "[bad anchor](docs/page.md#same-2)\n"
        "[bad self anchor](#nothing)\n"
        "[outside](../elsewhere.md)\n"
        "[ref]: docs/missing.md\n"
    )
    readme.write_text(text)
    problems = link_problems(Markdown.parse(readme, text), root=tmp_path)
    assert [problem.split(": ", 1)[0] for problem in problems] == [
        f"{readme}:10", f"{readme}:11", f"{readme}:12", f"{readme}:13", f"{readme}:14"], problems
    assert "no such file or folder" in problems[0]
    assert "#same-2" in problems[1]
    assert "#nothing" in problems[2]
    assert "outside the repository" in problems[3]


def test_make_check_finds_an_unknown_target() -> None:
    targets = make_targets(".PHONY: test demo\ninstall: $(VENV)/.installed\nVENV := .venv\ndemo: synth\n")
    assert targets == {"test", "demo", "install", ".PHONY"}
    text = (
        "Run `make demo`, `make install TORCH_INDEX=https://x/cpu`, `make -s test` or make demo.\n"
        "Roles make them; calls make no sense; `cmake build` and `VENV := .venv` are not targets.\n"
        "```sh\nmake tset   # a typo\nmake DEMO_ARGS=x demo\n```\n"
        "Then make synht in prose, and `make\n  lnit` across lines.\n"
    )
    problems = make_problems(Markdown.parse(ROOT / "scratch.md", text), targets)
    assert problems == [
        "scratch.md:4: make tset: the Makefile has no target 'tset'",
        "scratch.md:7: make lnit: the Makefile has no target 'lnit'",
        "scratch.md:7: make synht: the Makefile has no target 'synht'",
    ], problems


def test_smtrain_check_finds_an_unknown_command_and_subcommand() -> None:
    commands = cli_commands(build_parser())
    assert {"start", "watch", "models", "data", "new-program"} <= set(commands)
    assert commands["models"] == {"list", "approve", "reject"}
    assert commands["start"] == frozenset()
    text = (
        "The smtrain CLI, smtrain is here; tags `smtrain:execution`, `smtrain.program`, `smtrain/core/`,\n"
        "`s3://bucket/smtrain`, `SMTRAIN_DATA_BUCKET`, `.work/smtrain`, `smtrain --help`, `smtrain COMMAND`.\n"
        "`smtrain start --wait`, `smtrain models list`, `smtrain data upload`, `smtrain watch/status/logs`\n"
        "```sh\nARN=$(smtrain strat --program x)\nsmtrain models lists\necho | smtrain start_x\n```\n"
        "`smtrain\n  bogus`\n"
    )
    problems = smtrain_problems(Markdown.parse(ROOT / "scratch.md", text), commands)
    assert [problem.split(": no such")[0] for problem in problems] == [
        "scratch.md:5: smtrain strat", "scratch.md:6: smtrain models lists", "scratch.md:7: smtrain start_x",
        "scratch.md:9: smtrain bogus"], problems


def test_github_slugs() -> None:
    assert github_slug("Experiment tracking (MLflow) and `smtrain compare`") == (
        "experiment-tracking-mlflow-and-smtrain-compare")
    assert github_slug("Training code (`training_code/`)") == "training-code-training_code"
    assert github_slug("`smtrain preflight`: ask AWS before you deploy") == (
        "smtrain-preflight-ask-aws-before-you-deploy")
    assert github_slug("What is checked offline, and what is not") == "what-is-checked-offline-and-what-is-not"
    assert github_slug("See [the CLI](docs/cli.md)") == "see-the-cli"
