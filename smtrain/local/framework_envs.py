"""The environment a framework image gives its scripts, built offline: the framework and AWS's
training toolkit for it at the versions the image ships, never the project's own packages.

A script job on such an image (TensorFlow, scikit-learn and Hugging Face here) runs in a venv of its own built
from :data:`BUILDS`: the image's framework packages and AWS's toolkit for it, with their
dependencies, as the image's Dockerfile installs them. It is built on first use with a line in
the job's log (minutes: TensorFlow's wheels are hundreds of MB), cached by the hash of what it
pins beside the program environments (:mod:`smtrain.local.program_envs`, which layer a program's
own ``requirements.txt`` over it), and shared by every job and test on the machine. The job
starts as the image starts it: the toolkit's ``train``, with ``SAGEMAKER_TRAINING_MODULE``
naming the framework's training module where the image's module does more than run the script.

It is a subset of the image, and says so: this machine's Python (the image's may be older or
newer), the CPU build of the framework, the packages named here and their dependencies at
whatever versions pip resolves on the day (the image also has the SageMaker SDK,
tensorflow-datasets, OpenCV and more), no Linux packages of the image's. A job with no
requirements runs on the environment's own Python, so a job that installs packages itself
changes the cache for later jobs (delete the folder to rebuild it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smtrain.core import contract
from smtrain.local import debian_python
from smtrain.local.program_envs import (
    ProgramEnvironmentError,
    build_once,
    compile_environment,
    create_venv,
    env_site_packages,
    environment_key,
    pip_environment,
    tail,
)


@dataclass(frozen=True, kw_only=True)
class FrameworkBuild:
    """What one framework image version installs for its scripts."""

    #: Installed together, with their dependencies (pins as the image has them).
    packages: tuple[str, ...]
    #: AWS's toolkit for the framework, installed with them.
    toolkit: tuple[str, ...]
    #: ``SAGEMAKER_TRAINING_MODULE``, as the image sets it: the toolkit's ``train`` runs it. None:
    #: the toolkit's ``train`` runs the script itself, which is all the image's module does.
    training_module: str | None
    #: Where the versions come from.
    source: str
    #: The base framework the image is built on, as the SDK names it (Hugging Face's
    #: ``base_framework_version``); None where the image has no choice of base.
    base_framework_version: str | None = None
    #: The image's Python where this machine's would not do: "3.9" is Debian 11's CPython 3.9
    #: (:mod:`smtrain.local.debian_python`). None: this machine's Python.
    python: str | None = None
    #: The module whose ``main()`` is the image's ``train`` console script (its toolkit's).
    train_entry: str = "sagemaker_training.cli.train"
    #: Modules of the image that are not on PyPI, as ``{import name: file}`` of
    #: ``smtrain/local/image_modules/`` (each file says where it comes from), written into the
    #: environment's site-packages.
    image_modules: tuple[tuple[str, str], ...] = ()
    #: What the image's Dockerfile uninstalls after its installs.
    uninstalled: tuple[str, ...] = ()
    #: Whether the image's toolkit pip-installs the job's code as a module before running it
    #: (sagemaker-containers' ``run_module``): each job then runs in a venv of its own over the
    #: environment (program_envs.job_environment), so the install stays the job's.
    installs_module: bool = False

    def image_environment(self, python: Path) -> dict[str, str]:
        """What the image's ENV sets for a job run with ``python`` (the environment's): the
        training module (where the image's does more than run the script), that Python first on
        PATH, and no PYTHONPATH of this machine's (empty: CPython ignores it)."""
        inherited = os.environ.get("PATH", os.defpath)
        return {**({"SAGEMAKER_TRAINING_MODULE": self.training_module} if self.training_module else {}),
                "PYTHONPATH": "", "PATH": os.pathsep.join([str(python.parent), inherited])}


#: ``SAGEMAKER_TRAINING_MODULE`` of the SageMaker PyTorch training images (aws/deep-learning-
#: containers, pytorch/training/docker/*/Dockerfile.cpu): the PyTorch toolkit
#: (sagemaker-pytorch-training), which reads the distribution settings the SDK sends
#: (``sagemaker_torch_distributed_enabled``: sagemaker-pytorch-training-toolkit v3.0.0,
#: src/sagemaker_pytorch_container/training.py lines 27, 75-89) and then starts ``torchrun`` on
#: every instance, one node each (sagemaker-training, torch_distributed.py).
PYTORCH_TRAINING_MODULE = "sagemaker_pytorch_container.training:main"

#: The image's own modules that are not on PyPI (FrameworkBuild.image_modules).
_IMAGE_MODULES = Path(__file__).parent / "image_modules"

#: Per (framework, the image's version as the SDK names it): what its training image holds.
#: TensorFlow 2.19 (aws/deep-learning-containers, master f06ada0e, tensorflow/training/docker/
#: 2.19/py3/Dockerfile.cpu @ d9590225 and its os_scan_allowlist @ 9ce8911c): the tensorflow_cpu
#: 2.19.0 wheel, keras 3.10.0 (TensorFlow's dependency, as the scan allowlist records it),
#: ``SAGEMAKER_TRAINING_MODULE sagemaker_tensorflow_container.training:main``, on Python
#: 3.12.11. The Dockerfile installs the toolkit and sagemaker-training unpinned, with their
#: dependencies, and leaves numpy unpinned: here the toolkit is 20.4.1 (the 2.18 image's pin;
#: 20.5.0 requires numpy<1.24, which TensorFlow 2.19 refuses), sagemaker-training 4.8.4 (the 2.18
#: image's pin), numpy 1.26.4 (the 2.19 GPU image's pin; TensorFlow 2.19 takes 1.26 to 2.1).
#: pip, which the image has (a newer one), installs a program's requirements at job start.
BUILDS: dict[tuple[str, str], FrameworkBuild] = {
    ("tensorflow", "2.19"): FrameworkBuild(
        packages=("tensorflow-cpu==2.19.0", "keras==3.10.0", "numpy==1.26.4",
                  "sagemaker-training==4.8.4", "pip==23.2.1"),
        toolkit=("sagemaker-tensorflow-training==20.4.1",),
        training_module="sagemaker_tensorflow_container.training:main",
        source="aws/deep-learning-containers, tensorflow/training/docker/2.19/py3/Dockerfile.cpu",
    ),
    # scikit-learn 1.2-1: the pins of its image's requirements.txt (aws/sagemaker-scikit-learn-
    # container, installed by docker/<version>/final/Dockerfile.cpu before the container's own
    # package), from 44a0cdc, the 1.2-1-1 rebuild on Python 3.10: scikit-learn 1.2.1, numpy
    # 1.24.1, scipy 1.9.3, pandas 1.5.3, sagemaker-training 4.8.0, boto3 1.28.57 (botocore as it
    # resolves, <1.32), urllib3 1.26.17, python-dateutil 2.8.1, protobuf 3.20.2, six 1.15.0.
    # The 1.2-1 branch (b440c40, Python 3.9: vendored_requirements.IMAGE_RUNTIMES) pins pandas
    # 1.1.3 and scipy 1.8.0, which have no wheel for Python 3.11, so the rebuild's pins stand in.
    # joblib and threadpoolctl, unpinned there, come as pip resolves them; psutil 5.7.2 (no
    # wheel) and the serving stack are left out. ``SAGEMAKER_TRAINING_MODULE
    # sagemaker_sklearn_container.training:main`` names a package that is not on PyPI: its ``main``
    # (src/sagemaker_sklearn_container/training.py) is ``entry_point.run(module_dir,
    # user_entry_point, to_cmd_args(), to_env_vars(), runner_type=ProcessRunnerType)``, which is
    # what the toolkit's ``train`` runs with no module set (sagemaker_training/trainer.py,
    # ``train``, its ``else`` branch: the Process runner, as nothing sends
    # ``sagemaker_mpi_enabled`` to a scikit-learn job), so none is set here. Its pins have
    # wheels up to CPython 3.11 (contract.OFFLINE_IMAGE_NEWEST_PYTHON). pip: the base
    # Dockerfile upgrades it to the newest of the day the image was built; 24.2 is of that era.
    ("sklearn", "1.2-1"): FrameworkBuild(
        packages=("scikit-learn==1.2.1", "numpy==1.24.1", "scipy==1.9.3", "pandas==1.5.3",
                  "boto3==1.28.57", "urllib3==1.26.17", "python-dateutil==2.8.1",
                  "protobuf==3.20.2", "six==1.15.0", "pip==24.2"),
        toolkit=("sagemaker-training==4.8.0",),
        training_module=None,
        source="aws/sagemaker-scikit-learn-container 44a0cdc, requirements.txt",
    ),
    # Hugging Face, transformers 4.48 on PyTorch 2.3.0 (the SDK's 4.48.0 with base pytorch2.3.0,
    # the image huggingface-pytorch-training:2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04):
    # aws/deep-learning-containers, huggingface/pytorch/training/buildspec-2-3-0.yml @ 372eaae6
    # (transformers 4.48.0, datasets 3.1.0) and docker/2.3/py3/cu121/Dockerfile.gpu @ 9832d1af
    # (huggingface_hub 0.25.1, evaluate 0.4.3, accelerate 1.1.0, trl 0.11.4, peft 0.13.2, over
    # ``FROM pytorch-training:2.3.0-gpu-py311-cu121-ubuntu20.04-sagemaker``). That base
    # (pytorch/training/docker/2.3/py3/cu121/Dockerfile.gpu @ 06d0ef0e) sets
    # ``SAGEMAKER_TRAINING_MODULE sagemaker_pytorch_container.training:main`` and pip-installs
    # sagemaker-pytorch-training and sagemaker-training unpinned: here the releases of the day
    # transformers 4.48.0 came out (2025-01-10, PyPI's upload dates): sagemaker-pytorch-training
    # 2.8.1 (2023-10-23; it reads sagemaker_torch_distributed_enabled, training.py line 27) and
    # sagemaker-training 4.8.3 (2024-12-09). Of that era too, as the base's conda installs them
    # unpinned: numpy 1.26.4, pandas 2.2.3 and scikit-learn 1.6.0; pyarrow 18.1.0, which the
    # Dockerfile upgrades (pip resolving them today takes numpy 2 releases the rest refuse).
    # torch is the one difference in kind: the image's is PyTorch 2.3.0's CUDA build from AWS's
    # conda channel, which no registry here serves; this machine's CPU build of torch 2.13.0
    # (pip takes it from the machine's wheel folder) stands in, and the docs say so. Left out:
    # the extras transformers[audio,vision,pipelines] and huggingface_hub[hf_transfer], diffusers,
    # tensorboard, Pillow, ninja, and the CUDA-only bitsandbytes and flash-attn; Jinja2 and
    # werkzeug come as dependencies at pip's versions (the image pins werkzeug 3.0.6).
    ("huggingface", "4.48"): FrameworkBuild(
        packages=("torch==2.13.0", "transformers[sklearn,sentencepiece]==4.48.0", "datasets==3.1.0",
                  "huggingface_hub==0.25.1", "evaluate==0.4.3", "accelerate==1.1.0",
                  "trl==0.11.4", "peft==0.13.2", "numpy==1.26.4", "pandas==2.2.3",
                  "pyarrow==18.1.0", "scikit-learn==1.6.0"),
        toolkit=("sagemaker-pytorch-training==2.8.1", "sagemaker-training==4.8.3"),
        training_module=PYTORCH_TRAINING_MODULE,
        source="aws/deep-learning-containers, huggingface/pytorch/training/docker/2.3/py3/cu121/"
               "Dockerfile.gpu and buildspec-2-3-0.yml",
        base_framework_version="pytorch2.3.0",
    ),
    # XGBoost 1.7-1 (aws/sagemaker-xgboost-container, branch 1.7-1 @ f7a93a2, 2025-09-17):
    # docker/1.7-1/base/Dockerfile.cpu installs Python 3.9 (conda) and xgboost 1.7.4;
    # final/Dockerfile.cpu pip-installs requirements.txt, whose pins are these (the serving stack
    # multi-model-server, sagemaker-inference and gunicorn's own pins aside, and dask, dask-cuda,
    # pynvml, numba, matplotlib and Pillow left out: Dask's GPU training and plotting), then the
    # container's own package, and uninstalls ``typing``. Its ``SAGEMAKER_TRAINING_MODULE
    # sagemaker_xgboost_container.training:main`` is not on PyPI: its script branch is written into
    # the environment (image_modules/, which cites it), run by sagemaker-containers 2.8.6.post2's
    # ``train`` (the image's toolkit, which needs Python 3.9 or older: it imports
    # ``collections.Mapping``). Python: Debian 11's CPython 3.9.2 (smtrain.local.debian_python),
    # as this machine's 3.11 is too new for that toolkit. pip: the base Dockerfile upgrades it to
    # the newest of the day the image is built, unpinned; 25.2 (2025-07-30) is the newest of the
    # branch's last commit (2025-09-17), and with ``wheel`` there it still builds the script's
    # module by ``setup.py bdist_wheel``, fetching no build backend (pip 25.3, 2025-10-24, removed
    # that path: an image built after it behaves differently). setuptools: neither Dockerfile
    # upgrades it (Miniconda's stays); 80.9.0 (2025-05-27) is a choice of that era, not a pin of
    # the image's. Dependencies the pins do not name come as pip resolves them today. Also left
    # out: pyarrow, mlio and smdebug (the Dockerfiles' conda and git installs, for Pipe mode,
    # Parquet and the debugger), and the image's PYTHONPATH entry for the dmlc tracker (Rabit's
    # launcher for its distributed algorithm mode).
    ("xgboost", "1.7-1"): FrameworkBuild(
        packages=("xgboost==1.7.4", "numpy==1.24.1", "pandas==1.2.4", "scikit-learn==0.24.1",
                  "scipy==1.8.0", "boto3==1.17.52", "botocore==1.20.52", "python-dateutil==2.8.1",
                  "retrying==1.3.3", "urllib3==1.26.5", "protobuf==3.20.1", "PyYAML==5.4.1",
                  "psutil==5.6.7", "Flask==1.1.1", "Werkzeug==0.15.6", "itsdangerous==2.0.1",
                  "jinja2==2.11.3", "MarkupSafe==1.1.1", "gevent==23.9.1", "requests==2.29.0",
                  "certifi==2023.7.22", "cryptography==39.0.1", "wheel==0.36.2", "pip==25.2",
                  "setuptools==80.9.0"),
        toolkit=("sagemaker-containers==2.8.6.post2",),
        training_module="sagemaker_xgboost_container.training:main",
        source="aws/sagemaker-xgboost-container 1.7-1 (f7a93a2), requirements.txt and docker/1.7-1",
        python="3.9",
        train_entry="sagemaker_containers.cli.train",
        image_modules=(("sagemaker_xgboost_container/training.py",
                        "sagemaker_xgboost_container_training.py.txt"),
                       # What AWS's XGBoost examples import from the image's package (the
                       # abalone example: data_utils.get_dmatrix, distributed.rabit_run): each
                       # says it is not here, and why.
                       ("sagemaker_xgboost_container/data_utils.py",
                        "sagemaker_xgboost_container_absent.py.txt"),
                       ("sagemaker_xgboost_container/distributed.py",
                        "sagemaker_xgboost_container_absent.py.txt")),
        uninstalled=("typing",),
        installs_module=True,
    ),
}

#: Image repositories on a base framework no build of :data:`BUILDS` is on, and that base:
#: Hugging Face's TensorFlow base (the builds here are on its PyTorch base; the SDK's TensorFlow
#: ones stop at transformers 4.17).
_OTHER_BASES = {"/huggingface-tensorflow-training:": "TensorFlow"}


def image_version(image: str) -> str:
    """The framework version an AWS framework image's tag names, as the SDK spells it
    (:func:`smtrain.core.contract.offline_image_version`: ``2.19-cpu-py312`` and
    ``2.19.0-cpu-py312``: 2.19; ``1.2-1-cpu-py3``: 1.2-1)."""
    return contract.offline_image_version(image.rsplit(":", 1)[-1])


def build_for(framework: str, image: str) -> FrameworkBuild | None:
    """The build of ``framework``'s ``image``, or None where none is known here."""
    if unbuilt_base(image) is not None:
        return None
    return BUILDS.get((framework, image_version(image)))


def unbuilt_base(image: str) -> str | None:
    """The base framework of ``image`` where no build here is on it (Hugging Face's TensorFlow
    base), else None."""
    return next((base for repository, base in _OTHER_BASES.items() if repository in image), None)


def built_versions(framework: str) -> list[str]:
    """The versions of ``framework`` whose environments are known here (built on first use)."""
    return sorted(version for name, version in BUILDS if name == framework)


# The core's table says which versions run offline (the CLI reads it); this one says how.
assert {(framework, version) for framework, versions in contract.OFFLINE_IMAGE_ENVIRONMENTS.items()
        for version in versions} == set(BUILDS), "smtrain.core.contract.OFFLINE_IMAGE_ENVIRONMENTS"


def framework_environment(framework: str, version: str, cache_dir: Path,
                          log: Callable[[str], None]) -> Path:
    """The directory of ``framework`` ``version``'s environment (its ``bin/python``), built on
    first use under ``cache_dir``; ``log`` gets a line before a build starts and when it ends.
    Raises :class:`ProgramEnvironmentError` where pip fails or no build is known."""
    build = BUILDS.get((framework, version))
    if build is None:
        raise ProgramEnvironmentError(f"no {framework} {version} environment is known here: "
                                      f"{', '.join(built_versions(framework)) or 'none'}")
    pins = build.packages + build.toolkit
    base_python = (debian_python.debian_python(build.python, cache_dir, log)
                   if build.python is not None else None)
    # Keyed by the pins, the image's modules and the base interpreter, named for the image. A
    # venv made from the project's venv runs the base interpreter (its pyvenv.cfg's home) and
    # holds none of the project's packages, so another clone of the project (a CI run) shares it.
    modules = "".join(f"\n{target}\n{(_IMAGE_MODULES / name).read_text()}"
                      for target, name in build.image_modules)
    removed = "".join(f"\n-{name}" for name in build.uninstalled)
    # On Debian's Python the project's own version plays no part: the environment is not
    # rebuilt when the project's Python moves (its interpreter's folder is keyed by its packages).
    key = environment_key("\n".join(pins) + modules + removed, interpreter=str(base_python or sys.base_prefix),
                          python_version=f"debian {build.python}" if build.python is not None else sys.version)
    env_dir = cache_dir.expanduser().resolve() / f"{framework}-{version}-{key}"

    def build_it(path: Path) -> None:
        log(f"smtrain local: building the {framework} {version} image's environment in {path} "
            f"(first use only: {', '.join(pins)}; from {build.source})")
        _build(path, build, base_python)

    if build_once(env_dir, build_it, marker="\n".join(pins) + "\n"):
        log(f"smtrain local: the {framework} {version} environment is built (pip's output: "
            f"{env_dir / 'pip.log'})")
    return env_dir


def _build(env_dir: Path, build: FrameworkBuild, base_python: Path | None) -> None:
    create_venv(env_dir, python=base_python)
    env = pip_environment()
    python = env_dir / "bin" / "python"
    output = ""
    if base_python is None:
        # The project's pip installs into the new environment (pip's --python).
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
    else:
        # Another Python (Debian's 3.9): the project's pip need not run on it (pip 26.1 and later
        # do not), so the image's pinned pip goes in first, from its wheel, and installs the rest.
        env.update(compile_environment(base_python.parent))
        output = _bootstrap_pip(python, build, env)
        pip = [str(python), "-m", "pip"]
    installed = subprocess.run(
        [*pip, "install", "--disable-pip-version-check", "--no-input", "--no-warn-script-location",
         *build.packages, *build.toolkit], capture_output=True, text=True, env=env)
    output += installed.stdout + installed.stderr
    if installed.returncode == 0 and build.uninstalled:
        removed = subprocess.run([*pip, "uninstall", "--yes", *build.uninstalled],
                                 capture_output=True, text=True, env=env)
        installed, output = removed, output + removed.stdout + removed.stderr
    (env_dir / "pip.log").write_text(output)
    if installed.returncode != 0:
        raise ProgramEnvironmentError(f"pip failed (exit code {installed.returncode}):\n{tail(output)}")
    site_packages = env_site_packages(env_dir)
    for target, name in build.image_modules:
        module = site_packages / target
        module.parent.mkdir(parents=True, exist_ok=True)
        (module.parent / "__init__.py").touch()
        module.write_text((_IMAGE_MODULES / name).read_text())


def _bootstrap_pip(python: Path, build: FrameworkBuild, env: dict[str, str]) -> str:
    """The build's pinned pip, into the environment of ``python``: its wheel downloaded by the
    project's pip (as this machine's pip configuration says), then installed by itself, run from
    the wheel with ``python`` (a pip wheel runs as ``python pip-*.whl/pip``: pip's documented
    bootstrap). Returns what both printed."""
    pin = next((package for package in build.packages if package.startswith("pip==")), None)
    if pin is None:
        raise ProgramEnvironmentError("an environment on another Python needs its pip pinned")
    with tempfile.TemporaryDirectory() as scratch:
        downloaded = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
             "--no-deps", "--only-binary=:all:", "--dest", scratch, pin],
            capture_output=True, text=True, env=pip_environment())
        output = downloaded.stdout + downloaded.stderr
        wheels = sorted(Path(scratch).glob("pip-*.whl"))
        if downloaded.returncode != 0 or len(wheels) != 1:
            raise ProgramEnvironmentError(f"could not download {pin}:\n{tail(output)}")
        installed = subprocess.run(
            [str(python), f"{wheels[0]}/pip", "install", "--disable-pip-version-check", "--no-input",
             "--no-index", "--no-warn-script-location", str(wheels[0])], capture_output=True, text=True, env=env)
        output += installed.stdout + installed.stderr
        if installed.returncode != 0:
            raise ProgramEnvironmentError(f"could not install {pin}:\n{tail(output)}")
    return output
