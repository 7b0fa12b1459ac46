"""What an offline BYOC job takes from its image's Dockerfile (issue 19, item 2): the packages
its ``pip install`` lines install (the pins as written, ``-r`` files found through ``COPY``), the
final stage's ``ENV``, and one line naming what cannot be reproduced without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtrain.local.image_recipe import ImageRecipe, ImageRecipeError, read_recipe

ROOT = Path(__file__).resolve().parents[1]


def recipe_of(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None,
              python: tuple[int, int] = (3, 12)) -> ImageRecipe:
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return read_recipe(tmp_path / "Dockerfile", tmp_path, python_version=python)


def test_aws_scikit_bring_your_own_dockerfile(tmp_path: Path) -> None:
    """The Dockerfile of AWS's scikit_bring_your_own sample (amazon-sagemaker-examples,
    advanced_functionality/scikit_bring_your_own/container), as published."""
    recipe = recipe_of(tmp_path, """\
FROM ubuntu:18.04

MAINTAINER Amazon AI <sage-learner@amazon.com>

RUN apt-get -y update && apt-get install -y --no-install-recommends \\
         wget \\
         python3-pip \\
         python3-setuptools \\
         nginx \\
         ca-certificates \\
    && rm -rf /var/lib/apt/lists/*

RUN ln -s /usr/bin/python3 /usr/bin/python
RUN ln -s /usr/bin/pip3 /usr/bin/pip

RUN pip --no-cache-dir install numpy==1.16.2 scipy==1.2.1 scikit-learn==0.20.2 pandas flask gunicorn

ENV PYTHONUNBUFFERED=TRUE
ENV PYTHONDONTWRITEBYTECODE=TRUE
ENV PATH="/opt/program:${PATH}"

COPY decision_trees /opt/program
WORKDIR /opt/program
""")
    assert recipe.base_image == "ubuntu:18.04"
    assert recipe.requirements == ("numpy==1.16.2", "scipy==1.2.1", "scikit-learn==0.20.2", "pandas",
                                   "flask", "gunicorn")
    assert recipe.environment == {"PYTHONUNBUFFERED": "TRUE", "PYTHONDONTWRITEBYTECODE": "TRUE"}
    assert recipe.warning() == ("not reproduced here (no Docker): line 5: apt-get install wget "
                                "python3-pip python3-setuptools nginx ca-certificates")


def test_the_shipped_byoc_image_installs_its_requirements_file(tmp_path: Path) -> None:
    context = ROOT / "training_code"
    requirements = [line for line in (context / "digits_lightgbm" / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    recipe = read_recipe(context / "digits_lightgbm" / "Dockerfile", context, python_version=(3, 12))
    assert list(recipe.requirements) == [line.split("#")[0].strip() for line in requirements]
    assert recipe.base_image.startswith("python:3.12")
    assert recipe.not_run == ("line 5: apt-get install libgomp1=12.2.0-14+deb12u1",)
    other_python = read_recipe(context / "digits_lightgbm" / "Dockerfile", context, python_version=(3, 11))
    assert other_python.not_run[0] == (f"the base image's Python 3.12 (FROM {recipe.base_image}; "
                                       "this machine runs 3.11)")


def test_requirement_files_follow_copy_and_workdir(tmp_path: Path) -> None:
    recipe = recipe_of(tmp_path, """\
ARG PYTHON=3.10
FROM python:${PYTHON}-slim
WORKDIR /app
COPY reqs/ ./reqs/
COPY base.txt /tmp/base.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/base.txt --requirement=reqs/extra.txt \\
 && pip install -i https://pypi.org/simple "pandas>=2" -c reqs/extra.txt
RUN ["pip3", "install", "six==1.17.0"]
""", files={"base.txt": "# base\nnumpy==2.4.6\n", "reqs/extra.txt": "scipy==1.17.1  # pinned\n"},
        python=(3, 10))
    assert recipe.base_image == "python:3.10-slim"
    assert recipe.requirements == ("numpy==2.4.6", "scipy==1.17.1", "six==1.17.0")
    # An install naming an index (even PyPI's) is left out and said, never guessed.
    assert recipe.not_run == ("line 6: pip install pandas>=2 from another index or place (-i): "
                              "not installed here",)


def test_what_the_context_does_not_give_is_named(tmp_path: Path) -> None:
    recipe = recipe_of(tmp_path, """\
FROM python:3.12 AS build
RUN pip install --prefix=/install -r requirements.txt
FROM python:3.12-slim
COPY --from=build /install /usr/local
RUN apk add --no-cache libgomp && pip install ./wheels/mine.whl && conda install -y cudatoolkit
""")
    assert recipe.base_image == "python:3.12-slim"
    assert recipe.requirements == ()
    assert recipe.not_run == (
        "line 2: pip install -r requirements.txt (/requirements.txt is not copied into the image "
        "from the build context before this line)",
        "line 4: COPY --from=build (files of another stage or image; what that stage installs with "
        "pip is installed here)",
        "line 5: apk add libgomp",
        "line 5: pip install ./wheels/mine.whl (a local path in the image)",
        "line 5: conda install cudatoolkit",
    )


def test_a_dockerfile_without_from_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageRecipeError, match="has no FROM instruction"):
        recipe_of(tmp_path, "RUN pip install numpy\n")


def test_a_missing_dockerfile_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ImageRecipeError, match=f"cannot read {tmp_path / 'Dockerfile'}"):
        read_recipe(tmp_path / "Dockerfile", tmp_path)


def test_an_install_from_another_index_is_left_out_and_named(tmp_path: Path) -> None:
    """Installing those names from the default index could install someone else's package of
    that name (dependency confusion)."""
    recipe = recipe_of(tmp_path, """\
FROM python:3.12
RUN pip install --index-url https://corp.example/simple corp-internal-lib \\
 && pip install --extra-index-url=https://download.pytorch.org/whl/cpu torch==2.5.1 \\
 && pip install numpy==2.4.6
""")
    assert recipe.requirements == ("numpy==2.4.6",)
    assert recipe.not_run == (
        "line 2: pip install corp-internal-lib from another index or place (--index-url): not installed here",
        "line 2: pip install torch==2.5.1 from another index or place (--extra-index-url): not installed here")


def test_buildkit_run_flags_and_hashed_requirement_files(tmp_path: Path) -> None:
    recipe = recipe_of(tmp_path, """\
FROM python:3.12
COPY ./.reqs.txt /app/
RUN --mount=type=cache,target=/root/.cache/pip --network=default pip install -r /app/.reqs.txt
""", files={".reqs.txt": "numpy==2.4.6 \\\n    --hash=sha256:abc  # pinned\nscipy>=1.13\n-r more.txt\n"})
    assert recipe.requirements == ("numpy==2.4.6", "scipy>=1.13")
    assert recipe.not_run == ("line 3: pip install -r /app/.reqs.txt: its -r (another file, index or "
                              "place; not reproduced here)",)


def test_nothing_outside_the_build_context_is_read(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "reqs.txt").write_text("secretpkg==9\n")
    context = tmp_path / "context"
    (context / "sub").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM python:3.12\nCOPY sub/../../outside/ /app/\n"
                                        "RUN pip install -r /app/reqs.txt\n")
    recipe = read_recipe(context / "Dockerfile", context, python_version=(3, 12))
    assert recipe.requirements == ()
    assert recipe.not_run[0].startswith("line 3: pip install -r /app/reqs.txt (/app/reqs.txt is not copied")


@pytest.mark.parametrize(("reference", "official"), [
    ("python:3.12-slim", True), ("python", True), ("python@sha256:" + "0" * 64, True),
    ("python:3.12.8-slim-bookworm@sha256:" + "0" * 64, True), ("library/python:3", True),
    ("docker.io/library/python:3.12", True), ("index.docker.io/library/python:3.12", True),
    ("public.ecr.aws/docker/library/python:3.12", True),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub/library/python:3.12", True),
    ("myorg/python:3.12", False), ("registry.example.com/python:3.12", False),
    ("localhost:5000/python:3.12", False), ("123456789012.dkr.ecr.us-east-1.amazonaws.com/python:3.12", False),
    ("ubuntu:22.04", False), ("pythonista:3", False),
])
def test_docker_s_official_python_image_is_known_by_its_reference(reference: str, official: bool) -> None:
    """Docker Hub's ``library/python`` (or AWS's public mirror of it, or a pull-through cache of
    Docker Hub), any tag or digest; not another account's repository of the same name."""
    from smtrain.local.image_recipe import official_python_image

    assert official_python_image(reference) is official


@pytest.mark.parametrize(("dockerfile", "base", "python_only"), [
    ("FROM --platform=linux/amd64 python:3.12-slim\n", "python:3.12-slim", True),
    ("FROM python:3.12-slim AS base\nRUN pip install numpy==2.4.6\nFROM base\n", "python:3.12-slim", True),
    ("FROM python:3.12-slim AS build\nFROM --platform=$BUILDPLATFORM ubuntu:22.04 AS run\n", "ubuntu:22.04", False),
    ("FROM ubuntu:22.04 AS build\nFROM python:3.12-slim\n", "python:3.12-slim", True),
])
def test_the_final_stage_s_base_is_read_past_flags_and_stage_names(
        tmp_path: Path, dockerfile: str, base: str, python_only: bool) -> None:
    """``FROM --platform=...`` is a flag, not the image; a stage named by a later ``FROM``
    stands for the image it was built from."""
    recipe = recipe_of(tmp_path, dockerfile)
    assert (recipe.base_image, recipe.python_only) == (base, python_only)
