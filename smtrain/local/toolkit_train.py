"""AWS's training toolkit (``sagemaker-training``) as offline script-mode jobs run it.

This is the toolkit's own ``train`` (the console script the framework images run), with one
difference: where the job runs in a cached program environment built from the very
``requirements.txt`` that the job's ``sourcedir.tar.gz`` holds (:mod:`smtrain.local.program_envs`
marks a finished environment with that text) and whose packages still meet it, the toolkit's
``pip install -r requirements.txt`` is not run again. That install would find every requirement
satisfied and change nothing, after about 1.7 s of resolving (measured: ``mlflow-skinny`` and its
dependencies). The job's log says so in its place. Everything else (downloading and unpacking the
bundle into ``/opt/ml/code``, the ``SM_*`` environment, running the entry point, reporting the
failure reason) is the toolkit's own, unchanged; a requirements file that differs from the
environment's, or one it no longer meets, is installed by the toolkit as on SageMaker. So is a
bundle's vendored ``requirements.txt`` (``--no-index`` and the bundle's ``wheels/``:
:mod:`smtrain.core.vendored_requirements`), always: that install, the toolkit's own command with
no index (and, under network isolation, no network), is the check that the job needs none.

    python -m smtrain.local.toolkit_train
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sagemaker_training import modules, trainer

from smtrain.local.program_envs import COMPLETE_MARKER, package_lines, satisfied_in

#: The toolkit's logger (its messages in the job's log carry this name).
_logger = logging.getLogger("sagemaker-training-toolkit")
_install_requirements = modules.install_requirements


def built_from(environment: Path, requirements: Path) -> bool:
    """Whether ``environment`` is a finished program environment built from these requirements
    and still meets them. Compared as the environment's cache key compares them (comments, blank
    lines and order aside), then checked against what this interpreter imports: an environment
    whose pins the project met when it was built holds no packages of its own, so a later
    ``make install`` that moved the project's versions leaves it short, and the toolkit's install
    then puts the pinned versions in, as before."""
    marker = environment / COMPLETE_MARKER
    if not marker.is_file() or not requirements.is_file():
        return False
    lines = package_lines(requirements.read_text())
    if "--no-index" in lines:  # vendored: the toolkit's own install from wheels/ is the check
        return False
    if sorted(package_lines(marker.read_text())) != sorted(lines):
        return False
    return satisfied_in(lines, sys.path)


def install_requirements(path: str, capture_error: bool = False) -> None:
    """The toolkit's ``modules.install_requirements``, skipped where :func:`built_from` holds."""
    environment = Path(sys.prefix)
    if built_from(environment, Path(path) / "requirements.txt"):
        _logger.info("smtrain local: requirements.txt is what the program environment %s was built "
                     "from (see its pip.log); the toolkit's pip install is not run again",
                     environment)
        return
    _install_requirements(path, capture_error)


def main() -> None:
    modules.install_requirements = install_requirements  # entry_point looks it up at each call
    trainer.train()


if __name__ == "__main__":
    main()
