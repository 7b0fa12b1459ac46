"""Will a registered model version serve? What its ``model.tar.gz`` must hold, checked offline.

A script program's model serves on the framework's inference image, whose serving toolkit
imports the handler named by the container's ``SAGEMAKER_PROGRAM`` from the model archive's
``code/`` folder (sagemaker-inference-toolkit, ``environment.py``: ``code_dir =
os.path.join(model_dir, "code")``, the module ``SAGEMAKER_PROGRAM`` with its ``.py`` dropped,
default ``inference.py``; the SageMaker Python SDK's ``PyTorchModel`` repacks ``entry_point``
there). SageMaker does not look inside the archive when a version is registered or approved, so
a version without its handler is accepted and fails only when an endpoint starts.

:func:`serving_problems` reads a CreateModelPackage request or a DescribeModelPackage answer:
for every container that sets ``SAGEMAKER_PROGRAM`` and whose ``ModelDataUrl`` is a file of the
offline S3 stand-in, one line for each handler its archive lacks. An archive that is not there
is not judged. Only the member names are read (``tarfile``
lists a gzip tar by reading it through once, nothing is extracted).
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from smtrain.local.s3_stand_in import LocalS3, S3UriError

#: The inference toolkits' variable naming the handler module (sagemaker_inference/parameters.py).
PROGRAM_VARIABLE: Final = "SAGEMAKER_PROGRAM"
#: Where in the model archive the serving toolkit looks for it.
CODE_DIR: Final = "code"


def handler_file(program: str) -> str:
    """The archive member ``SAGEMAKER_PROGRAM`` names: ``code/<module>.py``."""
    return f"{CODE_DIR}/{program.removesuffix('.py')}.py"


def archive_problem(archive: Path, program: str, *, uri: str) -> str | None:
    """Why ``archive`` (a ``model.tar.gz``, at ``uri``) cannot serve with ``SAGEMAKER_PROGRAM``
    ``program``, in one line, or None."""
    wanted = handler_file(program)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = {name.removeprefix("./") for name in tar.getnames()}
    except (tarfile.TarError, OSError, EOFError) as error:
        return f"the model archive {uri} is not a gzip tar file ({error}): it cannot be served"
    if wanted in names:
        return None
    return (f"the model archive {uri} has no {wanted}: its inference image imports the handler "
            f"{PROGRAM_VARIABLE}={program} from the archive's {CODE_DIR}/ folder, so this model "
            "version would never serve (the training script must copy it into SM_MODEL_DIR/code)")


def serving_problems(version: Mapping[str, Any], s3: LocalS3) -> list[str]:
    """One line per handler missing from the local archives of ``version``'s containers."""
    problems: list[str] = []
    containers = (version.get("InferenceSpecification") or {}).get("Containers") or []
    for container in containers:
        program = (container.get("Environment") or {}).get(PROGRAM_VARIABLE)
        uri = container.get("ModelDataUrl")
        if not program or not uri:
            continue
        try:
            archive = s3.path(uri)
        except S3UriError:
            continue
        if not archive.is_file():
            continue  # not here to inspect: not judged
        problem = archive_problem(archive, program, uri=uri)
        if problem is not None:
            problems.append(problem)
    return problems
