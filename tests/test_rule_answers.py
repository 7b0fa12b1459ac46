"""smtrain.core.rule_answers: a program's default tuning is judged by the input rules once per
rules text, manifest and JSONata version, and the answer kept between processes is the one the
rules give."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from smtrain.core import input_rules, programs, rule_answers
from tests.conftest import ROOT


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "rule-answers"
    monkeypatch.setenv("SMTRAIN_RULE_CACHE", str(folder))
    return folder


def test_an_answer_is_evaluated_once_then_read(cache: Path) -> None:
    evaluated: list[str] = []

    def refuse() -> str:
        evaluated.append("x")
        return "field 'tuning.maxJobs' is wrong"

    assert rule_answers.kept_answer({"input": 1}, refuse) == "field 'tuning.maxJobs' is wrong"
    assert rule_answers.kept_answer({"input": 1}, refuse) == "field 'tuning.maxJobs' is wrong"
    assert evaluated == ["x"]
    assert rule_answers.answer_path({"input": 1}).parent == cache
    # No refusal is an answer too; other material is evaluated on its own.
    assert rule_answers.kept_answer({"input": 2}, lambda: None) is None
    assert rule_answers.kept_answer({"input": 2}, refuse) is None
    assert evaluated == ["x"]
    assert rule_answers.kept_answer({"input": 3}, refuse) == "field 'tuning.maxJobs' is wrong"
    assert evaluated == ["x", "x"]


@pytest.mark.parametrize("content", ["", "{not json", '{"other": 1}', '{"cause": 7}', "[]"])
def test_a_damaged_answer_is_evaluated_again_and_replaced(cache: Path, content: str) -> None:
    path = rule_answers.answer_path({"input": 1})
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert rule_answers.kept_answer({"input": 1}, lambda: "refused") == "refused"
    assert rule_answers.kept_answer({"input": 1}, lambda: "not asked") == "refused"


def test_a_folder_that_cannot_be_written_only_costs_an_evaluation(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SMTRAIN_RULE_CACHE", str(tmp_path / "a-file" / "answers"))
    assert rule_answers.kept_answer({"input": 1}, lambda: "refused") == "refused"
    assert rule_answers.kept_answer({"input": 1}, lambda: "evaluated again") == "evaluated again"


def test_the_default_cache_is_under_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTRAIN_RULE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert rule_answers.cache_dir() == tmp_path / "smtrain" / "rule-answers"


def _program_with_tuning(folder: Path, extra: str) -> Path:
    shutil.copytree(ROOT / "training_code" / "digits_sklearn", folder / "digits_sklearn")
    manifest = folder / "digits_sklearn" / programs.MANIFEST
    manifest.write_text(manifest.read_text().replace("hyperband_max_resource = 10",
                                                     f"hyperband_max_resource = 10\n{extra}"))
    return folder / "digits_sklearn"


def test_a_manifest_is_judged_by_the_rules_then_by_their_kept_answer(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal read back in a later process (here: with the in-process answers forgotten and
    the rules' evaluation made to fail) is the rules' own; an edit to the manifest is judged
    afresh."""
    program = _program_with_tuning(tmp_path / "code", "max_jobs = 2\nmax_parallel_jobs = 3")
    refusal = ("'tuning': the default tuning would be refused: field 'tuning.maxParallelJobs' must not "
               "exceed 'tuning.maxJobs'")
    with pytest.raises(programs.ProgramError, match=refusal):
        programs.load(program)
    assert len(list(cache.glob("*.json"))) == 1

    monkeypatch.setattr(programs, "_DEFAULT_TUNING_ANSWERS", {})

    def not_evaluated(*args: object, **kwargs: object) -> input_rules.Checked:
        raise AssertionError("the rules were evaluated again")

    with monkeypatch.context() as evaluation:
        evaluation.setattr(input_rules, "check", not_evaluated)
        with pytest.raises(programs.ProgramError, match=refusal):
            programs.load(program)

    manifest = program / programs.MANIFEST
    manifest.write_text(manifest.read_text().replace("max_parallel_jobs = 3", "max_parallel_jobs = 2"))
    assert programs.load(program).tuning is not None  # accepted: judged by the rules, not the old answer
    assert len(list(cache.glob("*.json"))) == 2


@pytest.mark.parametrize("changed", ["rules", "jsonata_version"])
def test_other_rules_or_another_jsonata_judge_afresh(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    changed: str) -> None:
    """The rules' text and the JSONata library's version are part of what an answer is kept by."""
    program = _program_with_tuning(tmp_path / "code", "max_jobs = 2\nmax_parallel_jobs = 3")
    with pytest.raises(programs.ProgramError):
        programs.load(program)
    monkeypatch.setattr(programs, "_DEFAULT_TUNING_ANSWERS", {})
    original = getattr(input_rules, changed)
    monkeypatch.setattr(input_rules, changed, lambda: original() + " ")
    evaluated: list[object] = []
    check = input_rules.check

    def counted(*args: Any, **kwargs: Any) -> input_rules.Checked:
        evaluated.append(args)
        return check(*args, **kwargs)

    monkeypatch.setattr(input_rules, "check", counted)
    with pytest.raises(programs.ProgramError):
        programs.load(program)
    assert len(evaluated) == 1
    assert len(list(cache.glob("*.json"))) == 2


def test_an_evaluation_that_failed_is_given_but_not_kept(cache: Path) -> None:
    """A cause that says the rules could not be evaluated (a crash, not their answer) is not kept:
    the next process evaluates again."""
    failed = f"{input_rules.NOT_CHECKED} RecursionError"

    def keep(answer: str | None) -> bool:
        return answer is None or not answer.startswith(input_rules.NOT_CHECKED)

    assert rule_answers.kept_answer({"input": 1}, lambda: failed, keep=keep) == failed
    assert not list(cache.glob("*"))
    assert rule_answers.kept_answer({"input": 1}, lambda: None, keep=keep) is None
    assert rule_answers.kept_answer({"input": 1}, lambda: failed, keep=keep) is None


def test_without_a_home_folder_the_rules_are_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    for variable in ("SMTRAIN_RULE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    assert rule_answers.kept_answer({"input": 1}, lambda: "refused") == "refused"
