"""SageMaker's built-in algorithms: which a ``[builtin]`` program may name, and what each publishes.

One table, with its sources, and nothing else (stdlib only: the CLI reads it in milliseconds).

- **Names and versions.** A built-in algorithm is one the SageMaker SDK's image look-up knows
  (``sagemaker.core.image_uris.retrieve(<name>, region, version=...)``; sagemaker-core 2.27,
  one JSON file per algorithm under ``sagemaker/core/image_uri_config/``: ``blazingtext.json``,
  ``factorization-machines.json``, ``forecasting-deepar.json`` (DeepAR),
  ``image-classification.json``, ``ipinsights.json``, ``kmeans.json``, ``knn.json``,
  ``lda.json``, ``linear-learner.json``, ``ntm.json``, ``object-detection.json``,
  ``object2vec.json``, ``pca.json``, ``randomcutforest.json``,
  ``semantic-segmentation.json``, ``seq2seq.json``, ``xgboost.json``). Every one of them but
  XGBoost has one version, ``"1"``, in a repository named after the algorithm; XGBoost's
  versions are the framework's (``1.7-1``, ...; repository ``sagemaker-xgboost``; its old
  first-party version ``1`` is in ``xgboost``), and its
  default is the ``xgboostVersion`` setting. Which regions have an image is the SDK's to say
  (``infra/images.py``; ``lda`` has fewer regions than the others), and ``tests/test_images.py``
  checks this table against the SDK's files.
- **Metrics.** Where the developer guide lists the metrics an algorithm computes for automatic
  model tuning ("Tune a <algorithm> model": "Metrics computed by the ... algorithm"), a
  program's tuning objective must be one of them (:data:`TUNING_METRICS`). Other algorithms'
  objectives are not checked here: SageMaker checks them when the tuning job starts.
- **Offline.** Only XGBoost has a local stand-in (:mod:`smtrain.local.builtin_xgboost`); every
  other built-in algorithm runs only on SageMaker, and the offline engine refuses it by name
  (:func:`offline_refusal`), never fakes it.
"""

from __future__ import annotations

from typing import Final

#: The algorithm a ``[builtin]`` table names -> the ECR repository of its training image (what
#: the image URI's path is; the SDK's ``image_uri_config/<name>.json`` ``repository``).
REPOSITORIES: Final[dict[str, str]] = {
    "blazingtext": "blazingtext",
    "factorization-machines": "factorization-machines",
    "forecasting-deepar": "forecasting-deepar",
    "image-classification": "image-classification",
    "ipinsights": "ipinsights",
    "kmeans": "kmeans",
    "knn": "knn",
    "lda": "lda",
    "linear-learner": "linear-learner",
    "ntm": "ntm",
    "object-detection": "object-detection",
    "object2vec": "object2vec",
    "pca": "pca",
    "randomcutforest": "randomcutforest",
    "semantic-segmentation": "semantic-segmentation",
    "seq2seq": "seq2seq",
    "xgboost": "sagemaker-xgboost",
}

#: Every built-in algorithm a manifest may name, sorted (what an error lists).
ALGORITHMS: Final[tuple[str, ...]] = tuple(sorted(REPOSITORIES))

#: The one version of each first-party algorithm (the SDK's files list only ``"1"``). XGBoost
#: is absent: its default version is the ``xgboostVersion`` setting.
DEFAULT_VERSIONS: Final[dict[str, str]] = {name: "1" for name in ALGORITHMS if name != "xgboost"}

#: Built-in algorithms the offline engine runs (with a local stand-in for the image).
RUNS_OFFLINE: Final[frozenset[str]] = frozenset({"xgboost"})

_LINEAR_LEARNER = ("absolute_loss", "binary_classification_accuracy", "binary_f_beta", "dcg",
                   "macro_f_beta", "macro_precision", "macro_recall", "mse",
                   "multiclass_accuracy", "multiclass_top_k_accuracy", "objective_loss",
                   "precision", "recall")

#: The metrics an algorithm computes that a tuning job may optimize, and where AWS lists them.
TUNING_METRICS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "linear-learner": (
        frozenset(f"{channel}:{metric}" for channel in ("test", "validation")
                  for metric in _LINEAR_LEARNER),
        "developer guide, \"Tune a linear learner model\" (linear-learner-tuning.html): the "
        "test:* metrics; the same names on the validation channel, which the page recommends "
        "tuning against"),
    "kmeans": (
        frozenset({"test:msd", "test:ssd"}),
        "developer guide, \"Tune a K-Means Model\" (k-means-tuning.html)"),
    "knn": (
        frozenset({"test:accuracy", "test:mse"}),
        "developer guide, \"Tune a k-NN Model\" (kNN-tuning.html)"),
    "xgboost": (
        frozenset(f"validation:{metric}" for metric in (
            "accuracy", "auc", "error", "f1", "logloss", "mae", "map", "merror", "mlogloss",
            "mse", "ndcg", "rmse")),
        "developer guide, \"Tune an XGBoost Model\" (xgboost-tuning.html), \"Evaluation Metrics "
        "Computed by the XGBoost Algorithm\""),
}


def unknown_algorithm(name: str) -> str:
    """Why ``name`` is no built-in algorithm (the algorithms that exist)."""
    return (f"no SageMaker built-in algorithm {name!r}; the SageMaker SDK's image_uris knows: "
            f"{', '.join(ALGORITHMS)}")


def objective_problem(algorithm: str, objective: str) -> str | None:
    """Why ``objective`` cannot be a tuning objective of ``algorithm``, or None (also for an
    algorithm whose metrics are not tabled here)."""
    tabled = TUNING_METRICS.get(algorithm)
    if tabled is None or objective in tabled[0]:
        return None
    metrics, source = tabled
    return (f"{objective!r} is not a metric {algorithm} computes for tuning: "
            f"{', '.join(sorted(metrics))} ({source})")


def algorithm_of_image(image: str) -> str | None:
    """The built-in algorithm whose training image ``image`` is (by its repository), or None."""
    path = image.rsplit("/", 1)[-1]
    repository = path.split(":", 1)[0].split("@", 1)[0]
    if repository == "xgboost":  # XGBoost's first-party version "1" (the SDK's xgboost.json)
        return "xgboost"
    for name, repo in REPOSITORIES.items():
        if repo == repository:
            return name
    return None


def offline_refusal(algorithm: str) -> str:
    """One line: why a run of ``algorithm`` cannot run on this machine, and what to do."""
    return (f"the SageMaker built-in algorithm {algorithm} runs only on SageMaker: AWS ships no "
            "local copy of its image, and the offline engine never fakes one; run it on AWS "
            "(smtrain start without --local), or train offline with a script-mode program")
