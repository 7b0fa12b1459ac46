"""The offline engine's MLflow store: a SQLite database with the ``smtrain`` experiment, made
without importing MLflow where it can be.

Importing MLflow and opening a store take a new process about 2 s (MLflow 3.17: 1.25 s to import,
0.8 s for the first client, most of it SQLAlchemy's and the store's modules), and creating a
store runs MLflow's schema migrations (about 0.7 s more). So a store is a copy of a template,
made once per MLflow version by MLflow itself in the program environments' cache
(``<cache>/mlflow-stores``; the cache is ``~/.cache/smtrain/envs`` or ``SMTRAIN_ENV_CACHE``): the
installed MLflow's schema, its ``Default`` experiment and the ``smtrain`` experiment, whose
artifact location each copy sets to its own folder with the standard library's ``sqlite3``
(the ``experiments`` table's ``artifact_location``, ``creation_time`` and ``last_update_time``
columns; a template that does not have that row as written is not used). A copy appears whole
(a partial file, then a hard link) and only where no store is yet.

MLflow itself makes the store (and the experiment, where a store lacks it) when no template can
be made or used: the cache cannot be written, or an existing store has no ``smtrain`` experiment.
:func:`warm_up` imports MLflow and opens the store ahead of the first run to log, in a thread
of the caller's choosing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from smtrain.core import contract
from smtrain.local.program_envs import default_cache_dir

EXPERIMENT = contract.EXPERIMENT
#: The template's artifact location for the ``smtrain`` experiment, replaced in every copy.
_PLACEHOLDER = "file:///smtrain-store-template/artifacts"


def _quiet_mlflow() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def tracking_store_uri(directory: Path) -> str:
    """The tracking URI of the store :func:`prepare_tracking_store` makes in ``directory``."""
    return f"sqlite:///{directory.resolve() / 'mlflow.db'}"


def _mlflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("mlflow-skinny", "mlflow"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    import mlflow  # installed some other way: ask the module

    return str(mlflow.__version__)


def store_template() -> Path:
    """The template store of the installed MLflow version, made by MLflow the first time."""
    template = default_cache_dir() / "mlflow-stores" / f"smtrain-{_mlflow_version()}.db"
    if template.is_file():
        return template
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        database = Path(scratch) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{database}").create_experiment(
            EXPERIMENT, artifact_location=_PLACEHOLDER)
        os.replace(database, template)  # whole or not at all, whoever else makes it meanwhile
    return template


def _new_store(database: Path, artifacts: Path) -> None:
    """``database`` as a copy of the template with the experiment's artifacts in ``artifacts``,
    appearing whole and only where none is yet (a store another process or thread made meanwhile
    is kept; each copy is a file of its own until then). A template that is not as written is
    deleted, so that the next store has a new one made, and this raises."""
    template = store_template()
    handle, name = tempfile.mkstemp(dir=database.parent, prefix=f".{database.name}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        shutil.copyfile(template, partial)
        now = int(time.time() * 1000)
        try:
            connection = sqlite3.connect(partial)
            try:
                with connection:  # one transaction, committed on leaving
                    updated = connection.execute(
                        "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                        "WHERE name = ? AND artifact_location = ?",
                        (artifacts.as_uri(), now, now, EXPERIMENT, _PLACEHOLDER)).rowcount
            finally:
                connection.close()
            if updated != 1:
                raise sqlite3.DatabaseError(f"{template}: no {EXPERIMENT!r} experiment to set")
        except sqlite3.Error:
            template.unlink(missing_ok=True)  # damaged or not ours: made again next time
            raise
        with contextlib.suppress(FileExistsError):  # a store made meanwhile is kept
            os.link(partial, database)
    finally:
        partial.unlink(missing_ok=True)


def _has_experiment(database: Path) -> bool:
    try:
        connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
        try:
            row = connection.execute("SELECT count(*) FROM experiments WHERE name = ? AND artifact_location != ?",
                                     (EXPERIMENT, _PLACEHOLDER)).fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return False  # not a store this can read: MLflow opens it and says what is wrong
    return bool(row and row[0])


def prepare_tracking_store(directory: Path) -> str:
    """A local MLflow store in ``directory`` (SQLite, artifacts beside it) with the ``smtrain``
    experiment; its tracking URI. Creating the experiment here fixes where every job's
    artifacts go, whatever directory the job runs in. MLflow is imported only where the
    template cannot serve (see the module's notes)."""
    directory.mkdir(parents=True, exist_ok=True)
    database = directory.resolve() / "mlflow.db"
    artifacts = directory.resolve() / "artifacts"
    uri = tracking_store_uri(directory)
    if not database.exists():
        # Else MLflow makes it below: the cache cannot be written, the template is not as
        # written, or MLflow could not make the template (its migrations raise their own errors).
        with contextlib.suppress(Exception):
            _new_store(database, artifacts)
    if database.exists() and _has_experiment(database):
        return uri
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    return uri


def warm_up(uri: str) -> None:
    """Import MLflow and open the store at ``uri`` (a read), so that logging the first run later
    does not wait for either; what fails here fails again, and is reported, where runs are
    logged."""
    try:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()
        MlflowClient(tracking_uri=uri).get_experiment_by_name(EXPERIMENT)
    except Exception:  # reported by whoever logs a run
        return
