"""The entry points ``smtrain new-program --kind script --framework F`` writes where the
framework has an idiom of its own: scikit-learn, XGBoost, TensorFlow and Hugging Face scripts train
with their framework and save the model as AWS's examples of it do. PyTorch keeps the plain skeleton
(standard library only, :mod:`smtrain.cli.program_commands`).

Each is composed from ``skeletons/``: the framework's file (``#%% doc``, ``#%% imports``, ``#%%
code``: its ``train``) inside the contract every skeleton keeps (``_contract.py.txt``: argparse
hyperparameters as the toolkit passes them, the ``SM_*`` paths, CSV channels, the failure file).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

SKELETONS_DIR: Final = Path(__file__).with_name("skeletons")

@dataclass(frozen=True, kw_only=True)
class FrameworkSkeleton:
    """What a framework's skeleton trains and needs."""

    #: The model file it writes under ``SM_MODEL_DIR``.
    model_file: str
    #: The module its generated test needs to run it here.
    module: str
    #: What the framework's image provides that it uses.
    uses: str
    #: What it trains (``new-program``'s next steps and the manifest's description).
    model: str
    #: The file in ``skeletons/`` written beside ``train.py`` as ``inference.py``, the handler
    #: ``train.py`` puts in the model's ``code/`` for the framework's inference image; None:
    #: the skeleton writes no handler.
    handler: str | None = None


#: Per framework with a skeleton of its own.
FRAMEWORK_SKELETONS: Final[dict[str, FrameworkSkeleton]] = {
    "sklearn": FrameworkSkeleton(model_file="model.joblib", module="sklearn",
                                 uses="scikit-learn, joblib and numpy",
                                 model="a logistic regression (scikit-learn's SGDClassifier)"),
    "xgboost": FrameworkSkeleton(model_file="xgboost-model.json", module="xgboost",
                                 uses="xgboost and numpy",
                                 model="gradient-boosted trees (one round an epoch)"),
    "tensorflow": FrameworkSkeleton(model_file="1/saved_model.pb", module="tensorflow",
                                    uses="TensorFlow (Keras) and numpy",
                                    model="a Keras softmax regression"),
    "huggingface": FrameworkSkeleton(model_file="model.safetensors", module="transformers",
                                     uses="transformers, torch and numpy",
                                     model="a one-layer transformer classifier (transformers' ViT, by Trainer)",
                                     handler="huggingface_inference.py.txt"),
}

#: The TensorFlow toolkit passes ``--model_dir`` (the stack sends it, as the SDK's TensorFlow
#: estimator does): the script accepts it and saves to ``SM_MODEL_DIR``.
_EXTRA_ARGUMENTS: Final[dict[str, str]] = {
    "tensorflow": "    # Sent as the TensorFlow estimator sends it; the model goes to --model-dir (SM_MODEL_DIR).\n"
                  '    parser.add_argument("--model_dir", dest="estimator_model_dir")\n',
}


@cache
def _sections(file_name: str) -> dict[str, str]:
    """A skeleton file's sections by name (the text after each ``#%% <name>`` line)."""
    sections: dict[str, str] = {}
    current = None
    for line in (SKELETONS_DIR / file_name).read_text().splitlines(keepends=True):
        if line.startswith("#%% "):
            current = line[4:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line
    return sections


def entry_point(framework: str) -> str:
    """The ``train.py`` of a ``framework`` skeleton (one of :data:`FRAMEWORK_SKELETONS`)."""
    own = _sections(f"{framework}.py.txt")
    contract = _sections("_contract.py.txt")
    body = contract["body"].replace("__EXTRA_ARGUMENTS__", _EXTRA_ARGUMENTS.get(framework, ""))
    third_party = (contract["third-party"] + own["imports"]).splitlines()
    # In isort's order, as the project's linter keeps it: plain imports, then from-imports.
    imports = sorted(line for line in third_party if line.startswith("import ")) + sorted(
        line for line in third_party if line.startswith("from "))
    head = "\n\n".join(part.strip("\n") for part in (
        own["doc"], "from __future__ import annotations", contract["imports"], "\n".join(imports)))
    # One blank line after the imports (the body starts with constants), two between top-level
    # definitions (PEP 8).
    definitions = "\n\n\n".join(part.strip("\n") for part in (body, own["code"], contract["main"]))
    return f"{head}\n\n{definitions}\n"


def inference_handler(framework: str) -> str | None:
    """The ``inference.py`` a ``framework`` skeleton writes beside ``train.py``, or None."""
    skeleton = FRAMEWORK_SKELETONS.get(framework)
    if skeleton is None or skeleton.handler is None:
        return None
    return (SKELETONS_DIR / skeleton.handler).read_text()
