"""One botocore data loader for every boto3 session of an offline process.

Importing this module shares it (:func:`share_loader`), so the offline engine imports it before
moto: moto's EC2 models, which its Step Functions interpreter imports through its Batch task
service, build their region table at import by calling ``boto3.Session().get_available_regions``
three times (``moto/ec2/models/availability_zones_and_regions.py``), and botocore's
``get_available_regions`` reads the whole EC2 service model to find its endpoint prefix. Each
new session has a loader of its own, so that is the largest model botocore has read three
times, in every ``smtrain start --local``, the demo and the notebook. A boto3
client per command or per job (the CLI, the engine's S3 and SageMaker stand-ins) reads the same
files again likewise. Importing the engine took 1.35-1.46 s before and 0.87-0.93 s after
(docs/performance.md).

A loader caches what it parses (``botocore.loaders.instance_cache``) and hands the same parsed
model to every caller; the files are botocore's own and are only read. Sharing one per search
path changes what is read from disk, not what any session sees. The test suite shared it in
every test process before the engine did (``tests/conftest.py`` now imports this module). A
custom data path (``AWS_DATA_PATH``) gets a loader of its own; a search path appended to a
shared loader reaches every session that shares it.
"""

from __future__ import annotations

import functools
import threading

import botocore.loaders
import botocore.session

_lock = threading.Lock()
_shared = False


class _UniquePaths(list[str]):
    """Each boto3 session appends boto3's data folder to its loader's search paths: once is
    enough for a shared loader (else every lookup walks one more folder per session)."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


def share_loader() -> None:
    """Give every botocore session of this process one loader per search path (idempotent)."""
    global _shared
    with _lock:
        if _shared:
            return
        create_loader = botocore.loaders.create_loader

        @functools.cache
        def by_search_path(search_path_string: str | None) -> botocore.loaders.Loader:
            loader = create_loader(search_path_string)
            loader._search_paths = _UniquePaths(loader.search_paths)
            return loader

        def shared(search_path_string: str | None = None) -> botocore.loaders.Loader:
            # One key for create_loader() and create_loader(None) (functools.cache would not).
            return by_search_path(search_path_string)

        botocore.session.create_loader = shared
        botocore.loaders.create_loader = shared  # the SageMaker SDK's endpoint lookups call it so
        _shared = True


share_loader()
