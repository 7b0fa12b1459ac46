"""How a training job's channels reach it offline, per SageMaker's input modes.

Each channel of a ``CreateTrainingJob`` request names its ``InputMode`` (else the job's
``TrainingInputMode``), its ``S3DataDistributionType`` and its ``CompressionType`` (API
reference, Channel and S3DataSource). Offline, for each instance the engine runs (``algo-1`` ...):

- **File**: the channel's objects are copied into ``/opt/ml/input/data/<channel>`` before the
  program starts, as SageMaker copies them to the instance's volume.
- **FastFile**: the same directory, the same files. SageMaker streams each object from S3 as
  the program reads it; offline they are copied first, and the job's log says so.
- **Pipe**: no directory; each pass over the channel is the FIFO
  ``/opt/ml/input/data/<channel>_<epoch>`` (``_0`` for the first pass): "Open
  /opt/ml/input/data/training_0 in read mode and read it to end-of-file (EOF) or, if you are
  done with the first epoch, close the pipe file early. After closing the first pipe file, look
  for /opt/ml/input/data/training_1" (developer guide, "Running your training image"). Offline
  it streams the channel's objects one after the other, in key order; the next pass's FIFO
  exists once the current one is opened (the guide has a program retry until it appears, so a
  program must not rely on this). :class:`PipeFeeder` writes them. With ``CompressionType``
  Gzip the objects are gunzipped on their way in: no AWS document found says so for training
  jobs (Processing's ``S3CompressionType`` and batch transform's ``CompressionType`` say they
  decompress), so a program should not rely on either; the log says which was done.
- **ShardedByS3Key**: "each instance gets approximately 1/n of the number of S3 objects" (API
  reference, S3DataSource.S3DataDistributionType); AWS does not say which objects go where.
  Offline the keys are sorted and dealt round robin (:func:`shard`): instance ``i`` of ``n`` gets
  keys ``i``, ``i + n``, ... so ``algo-1`` gets the first of every ``n``.

``/opt/ml/input/config/inputdataconfig.json`` names each channel's ``TrainingInputMode``,
``S3DistributionType``, ``RecordWrapperType`` and ``ContentType`` (:func:`config_entry`), which
the training toolkit and BYOC programs read.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smtrain.core import contract

#: Bytes written to a FIFO at a time.
_CHUNK = 1 << 16


@dataclass(frozen=True, kw_only=True)
class ChannelDelivery:
    """One channel as one instance of a job receives it."""

    name: str
    input_mode: str
    distribution: str
    compression: str
    content_type: str | None
    #: The instance's objects (its shard, or all of them), in key order.
    objects: tuple[Path, ...]
    #: How many objects the channel holds in all (before sharding).
    total_objects: int
    #: The directory the S3 prefix maps to: an object's path under the channel's directory is
    #: its path relative to this.
    prefix_dir: Path
    #: Which instance (from 0) of how many receives it: SageMaker names them algo-1 ... algo-N.
    host_index: int = 0
    host_count: int = 1

    @property
    def gzipped(self) -> bool:
        return self.compression == contract.GZIP_COMPRESSION

    @property
    def is_pipe(self) -> bool:
        return self.input_mode == contract.PIPE_INPUT_MODE

    def config_entry(self) -> dict[str, str]:
        """The channel's entry in ``inputdataconfig.json``, as SageMaker writes it (developer
        guide, "How Amazon SageMaker AI Provides Training Information"). A FastFile channel is
        written as File: "in FastFile mode, your TrainingInputMode parameter is written to
        inputdataconfig.json as "File"" (the same guide, "Running your training image"; its
        2023 text said "FastFile": programs written for File read it unchanged either way)."""
        mode = (contract.DEFAULT_INPUT_MODE if self.input_mode == contract.FAST_FILE_INPUT_MODE
                else self.input_mode)
        entry = {"TrainingInputMode": mode, "S3DistributionType": self.distribution,
                 "RecordWrapperType": "None"}
        if self.content_type is not None:
            entry["ContentType"] = self.content_type
        return entry

    def copy_to(self, directory: Path) -> None:
        """File and FastFile: the instance's objects under ``directory``, at their key paths."""
        directory.mkdir(parents=True, exist_ok=True)
        for path in self.objects:
            destination = directory / path.relative_to(self.prefix_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)

    def notes(self) -> list[str]:
        """What the job's log says about how this channel was delivered (nothing for a plain
        File channel)."""
        notes = []
        if self.distribution == contract.SHARDED_BY_S3_KEY:
            number = self.host_index + 1
            notes.append(f"channel '{self.name}': ShardedByS3Key: this instance (algo-{number}, {number} of "
                         f"{self.host_count}) got {len(self.objects)} of its "
                         f"{_objects(self.total_objects)} (offline: the keys sorted and dealt "
                         "round robin; AWS does not say which objects go to which instance)")
        if self.input_mode == contract.FAST_FILE_INPUT_MODE:
            notes.append(f"channel '{self.name}': FastFile: offline its objects were copied to "
                         f"{contract.CONTAINER_BASE_DIR}/input/data/{self.name} before the job "
                         "started, as File mode copies them; on SageMaker the same files are "
                         "streamed from S3 as the program reads them")
        if self.is_pipe:
            unpacked = (", each gunzipped (as Processing's S3CompressionType documents; no AWS "
                        "document found says it for training)") if self.gzipped else ""
            notes.append(f"channel '{self.name}': Pipe: each pass reads the FIFO "
                         f"{contract.pipe_path(f'{contract.CONTAINER_BASE_DIR}/input/data/{self.name}', 0)}"
                         f", then _1, ...: {_objects(len(self.objects))} in key order{unpacked}")
        return notes


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def shard(objects: Sequence[Path], *, host_index: int, host_count: int) -> tuple[Path, ...]:
    """Instance ``host_index`` (from 0) of ``host_count``'s share of ``objects`` (in key order)
    under ShardedByS3Key: dealt round robin."""
    if not 0 <= host_index < host_count:
        raise ValueError(f"host {host_index} is not one of {host_count}")
    return tuple(objects[host_index::host_count])


def delivery(channel: Mapping[str, Any], *, objects: Sequence[Path], prefix_dir: Path,
             training_input_mode: str, host_index: int, host_count: int) -> ChannelDelivery:
    """How ``channel`` (a request's Channel) reaches instance ``host_index`` of ``host_count``.
    ``objects`` are the files of the channel's S3 prefix, which maps to ``prefix_dir``."""
    source = channel["DataSource"]["S3DataSource"]
    distribution = source.get("S3DataDistributionType", contract.DEFAULT_S3_DATA_DISTRIBUTION)
    # S3 lists keys in UTF-8 binary order: "c.csv" before "c/d.csv" (a path-wise sort differs).
    ordered = tuple(sorted(objects, key=lambda path: path.relative_to(prefix_dir).as_posix().encode()))
    return ChannelDelivery(
        name=channel["ChannelName"],
        input_mode=channel.get("InputMode", training_input_mode),
        distribution=distribution,
        compression=channel.get("CompressionType", contract.DEFAULT_COMPRESSION),
        content_type=channel.get("ContentType"),
        objects=(shard(ordered, host_index=host_index, host_count=host_count)
                 if distribution == contract.SHARDED_BY_S3_KEY else ordered),
        total_objects=len(ordered),
        prefix_dir=prefix_dir, host_index=host_index, host_count=host_count)


class PipeFeedError(Exception):
    """A Pipe channel could not be fed (an object that is not gzip data, an unreadable object):
    the message names the channel and the object."""


class PipeFeeder:
    """Writes a Pipe-mode channel into its FIFOs while a job runs: ``<channel dir>_0`` for the
    first pass, then ``_1`` and so on, each the channel's objects in order (gunzipped with
    ``gzip_compressed``). Each FIFO is made once the previous one is opened by a reader; a reader
    that closes a pass early ends it. :meth:`stop` ends the feeding once the job's process has
    ended, removes every FIFO this feeder made (and nothing else), and raises
    :class:`PipeFeedError` when feeding failed (the pass being read then ended early)."""

    def __init__(self, channel_dir: Path, objects: Sequence[Path], *, gzip_compressed: bool) -> None:
        self.channel_dir = channel_dir
        self.objects = tuple(objects)
        self.gzip_compressed = gzip_compressed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._feed, name=f"pipe-{channel_dir.name}",
                                        daemon=True)
        self._made: list[Path] = []
        self._current: Path | None = None
        self._error: str | None = None

    def fifo(self, epoch: int) -> Path:
        return Path(contract.pipe_path(str(self.channel_dir), epoch))

    def _make(self, epoch: int) -> Path:
        path = self.fifo(epoch)
        os.mkfifo(path)
        self._made.append(path)
        self._current = path
        return path

    def start(self) -> None:
        self.channel_dir.parent.mkdir(parents=True, exist_ok=True)
        self._make(0)
        self._thread.start()

    def _open(self, path: Path) -> IO[bytes] | None:
        """The FIFO's write end, once a reader opens it; None when stopping."""
        handle = open(path, "wb")  # noqa: SIM115 - closed by _feed
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                handle.close()
            return None
        return handle

    def _feed(self) -> None:
        epoch = 0
        try:
            while not self._stopping.is_set():
                current = self.fifo(epoch)
                handle = self._open(current)
                if handle is None:
                    return
                # The next pass's FIFO exists as soon as a reader has this one: one that closes
                # this pass early (or reads it to its end) finds the next at once.
                self._make(epoch + 1)
                try:
                    self._write_pass(handle)
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        handle.close()
                    current.unlink(missing_ok=True)
                epoch += 1
        except Exception as error:  # reported by stop(): the job fails naming it
            self._error = f"{type(error).__name__}: {error}"
            self._abandon()

    def _abandon(self) -> None:
        """After a failure: the next FIFO goes, and no reader waits for a pass that never comes.

        The FIFO is held open for reading and writing while its name is removed: Linux opens a
        FIFO so without blocking ("Under Linux, opening a FIFO for read and write will succeed
        both in blocking and nonblocking mode", fifo(7)). As a writer, that releases a reader
        blocked in ``open``, and a reader that found the name before it went opens at once;
        each then reads the pass's end (EOF) when it is closed. A reader that comes later finds
        no FIFO. (A write-only open could not do this: it fails with ENXIO while no reader has
        the FIFO open, and a reader that reached ``open`` just after it, and before the name
        went, waited for a writer that never came.)"""
        pending = self._current
        if pending is None:
            return
        try:
            held: int | None = os.open(pending, os.O_RDWR | os.O_NONBLOCK)
        except OSError:  # already gone
            held = None
        pending.unlink(missing_ok=True)
        if held is not None:
            os.close(held)

    def _write_pass(self, handle: IO[bytes]) -> None:
        for path in self.objects:
            try:
                with gzip.open(path, "rb") if self.gzip_compressed else path.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        handle.write(chunk)  # a buffered writer: the whole chunk, or an error
            except BrokenPipeError:
                return  # the reader closed this pass before its end
            except (OSError, EOFError) as error:
                raise PipeFeedError(f"{path.name}: {error}") from error

    def stop(self) -> None:
        """End the feeding: a writer waiting for a reader is released (a reader opened and
        closed at once lets its ``open`` return), and no FIFO of this feeder's is left."""
        self._stopping.set()
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            current = self._current
            if current is not None:
                with contextlib.suppress(OSError):
                    os.close(os.open(current, os.O_RDONLY | os.O_NONBLOCK))
            self._thread.join(timeout=0.05)
        for made in self._made:
            made.unlink(missing_ok=True)
        if self._error is not None:
            raise PipeFeedError(f"channel '{self.channel_dir.name}' could not be fed through its "
                                f"pipe: {self._error}")
