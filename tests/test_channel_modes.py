"""Channels in each of SageMaker's input modes, and sharded, as the offline engine delivers them
to a real job (a tiny BYOC program run by a LocalBackend): File and FastFile as a directory,
Pipe as one FIFO per pass (``<channel>_<epoch>``), ShardedByS3Key as the instance's share of the
objects; ``inputdataconfig.json`` as SageMaker writes it."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from smtrain.local import channel_data, isolation, opt_ml
from smtrain.local.local_backend import LocalBackend, TrainingJob
from smtrain.local.sagemaker_rules import rule_violations
from tests.test_local_failures import IMAGE, tiny_backend

#: Reads what the job was given: for each channel, its inputdataconfig entry, and either its
#: directory's files or, in Pipe mode, three passes (the second closed after one byte).
READER = """
    import json, os
    base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
    data = os.path.join(base, "input", "data")
    config = json.load(open(os.path.join(base, "input", "config", "inputdataconfig.json")))
    seen = {}
    for name, entry in config.items():
        channel = os.path.join(data, name)
        if entry["TrainingInputMode"] == "Pipe":
            passes = []
            for epoch in range(3):
                with open(f"{channel}_{epoch}", "rb") as pipe:
                    passes.append((pipe.read(1) if epoch == 1 else pipe.read()).decode())
            seen[name] = {"entry": entry, "passes": passes, "directory": os.path.exists(channel)}
        else:
            files = sorted(os.path.relpath(os.path.join(d, f), channel)
                           for d, _, fs in os.walk(channel) for f in fs)
            seen[name] = {"entry": entry, "files": files}
    open(os.path.join(base, "model", "seen.json"), "w").write(json.dumps(seen))
"""


def _put(backend: LocalBackend, key: str, body: bytes) -> None:
    path = backend.s3.path(f"s3://local-data/{key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def _channel(name: str, prefix: str, **options: str) -> dict[str, Any]:
    channel: dict[str, Any] = {"ChannelName": name, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://local-data/{prefix}/",
        "S3DataDistributionType": options.pop("distribution", "FullyReplicated")}}}
    return {**channel, **options}


def _run(backend: LocalBackend, name: str, channels: list[dict[str, Any]], *,
         instance_count: int = 1) -> tuple[TrainingJob, dict[str, Any]]:
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": instance_count, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }
    assert rule_violations("CreateTrainingJob", request) == []
    job = backend.register(request)
    backend.execute(job)
    assert job.status == "Completed", job.failure_reason
    seen: dict[str, Any] = json.loads((backend.work_dir / "jobs" / name / "opt_ml" / "model" / "seen.json").read_text())
    return job, seen


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    backend = tiny_backend(tmp_path, READER)
    for key, body in (("rows/a.csv", b"1,a\n"), ("rows/b.csv", b"2,b\n"), ("rows/c/d.csv", b"3,c\n"),
                      ("rows/e.csv", b"4,d\n"), ("rows/f.csv", b"5,e\n")):
        _put(backend, key, body)
        _put(backend, f"packed/{key.split('/', 1)[1]}.gz", gzip.compress(body))
    return backend


def test_pipe_mode_streams_each_pass_through_its_own_fifo(backend: LocalBackend) -> None:
    """Pass 0, then 1 (closed early: the rest of it is dropped), then 2, each the channel's
    objects in key order; no directory for the channel; inputdataconfig says Pipe; a gzipped
    channel arrives gunzipped; no FIFO is left once the job ends."""
    job, seen = _run(backend, "piped", [_channel("train", "rows", InputMode="Pipe"),
                                        _channel("packed", "packed", InputMode="Pipe", CompressionType="Gzip"),
                                        _channel("validation", "rows")])
    whole = "1,a\n2,b\n3,c\n4,d\n5,e\n"
    assert seen["train"]["passes"] == [whole, "1", whole]
    assert seen["train"]["directory"] is False
    assert seen["train"]["entry"] == {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated",
                                      "RecordWrapperType": "None", "ContentType": "text/csv"}
    assert seen["packed"]["passes"] == [whole, "1", whole]
    assert seen["validation"]["entry"]["TrainingInputMode"] == "File"
    assert seen["validation"]["files"] == ["a.csv", "b.csv", "c/d.csv", "e.csv", "f.csv"]
    data = backend.work_dir / "jobs" / "piped" / "opt_ml" / "input" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["validation"], "no FIFO outlives the job"
    assert any("channel 'train': Pipe: each pass reads the FIFO /opt/ml/input/data/train_0" in n
               for n in job.notes)
    assert any("channel 'packed': Pipe" in n and "gunzipped" in n for n in job.notes)
    assert _feeders_alive() == []


def test_sharded_channel_gives_the_instance_its_share(backend: LocalBackend) -> None:
    """ShardedByS3Key on 2 instances: algo-1 gets every other key of the sorted five, algo-2 the
    rest (each its own tree: tests/test_cluster.py); a FullyReplicated channel, all of them."""
    job, seen = _run(backend, "sharded", [_channel("train", "rows", distribution="ShardedByS3Key"),
                                          _channel("validation", "rows")], instance_count=2)
    assert seen["train"]["files"] == ["a.csv", "c/d.csv", "f.csv"]
    assert seen["train"]["entry"]["S3DistributionType"] == "ShardedByS3Key"
    assert len(seen["validation"]["files"]) == 5
    assert any("ShardedByS3Key: this instance (algo-1, 1 of 2) got 3 of its 5 objects" in n for n in job.notes)
    if isolation.probe().available and opt_ml.probe().available:  # algo-2 ran too
        second = backend.work_dir / "jobs" / "sharded" / "hosts" / "algo-2" / "opt_ml" / "model" / "seen.json"
        assert json.loads(second.read_text())["train"]["files"] == ["b.csv", "e.csv"]
        assert any("(algo-2, 2 of 2) got 2 of its 5 objects" in n for n in job.notes)


def test_fast_file_is_a_directory_that_inputdataconfig_calls_file(backend: LocalBackend) -> None:
    """FastFile: the same directory and files as File; inputdataconfig.json says File ("in
    FastFile mode, your TrainingInputMode parameter is written to inputdataconfig.json as
    File", developer guide), and the log says the offline copy is not a stream."""
    job, seen = _run(backend, "fast", [_channel("train", "rows", InputMode="FastFile")])
    assert seen["train"]["files"] == ["a.csv", "b.csv", "c/d.csv", "e.csv", "f.csv"]
    assert seen["train"]["entry"]["TrainingInputMode"] == "File"
    assert any("channel 'train': FastFile: offline its objects were copied" in n for n in job.notes)


def _feeders_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pipe-")]


def test_a_pipe_job_that_reads_nothing_ends_with_it(tmp_path: Path) -> None:
    """A program that never opens its FIFO: the job ends when the program does (the feeder
    waiting for a reader is released at once, not after its 10 s limit), and a File channel
    whose name begins with the Pipe channel's (train_aug beside train) is left alone."""
    backend = tiny_backend(tmp_path, """
        import os
        base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
        assert sorted(os.listdir(os.path.join(base, "input", "data", "train_aug"))) == ["a.csv"]
        open(os.path.join(base, "model", "seen.json"), "w").write("{}")
    """)
    _put(backend, "rows/a.csv", b"1\n")
    started = time.monotonic()
    _, seen = _run(backend, "unread", [_channel("train", "rows", InputMode="Pipe"), _channel("train_aug", "rows")])
    assert time.monotonic() - started < 8, "the feeder held the job up"
    assert seen == {} and _feeders_alive() == []
    data = backend.work_dir / "jobs" / "unread" / "opt_ml" / "input" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["train_aug"]


def test_an_abandoned_pass_releases_a_reader_that_comes_while_its_fifo_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed pass, a reader that opens the next FIFO in the instant between the feeder's
    release of waiting readers and the removal of its name (the window that hung
    test_a_pipe_that_cannot_be_fed_fails_the_job_naming_it now and then) gets the pass's end."""
    feeder = channel_data.PipeFeeder(tmp_path / "train", [], gzip_compressed=False)
    pending = feeder.fifo(1)
    pending.parent.mkdir(parents=True, exist_ok=True)
    feeder._make(1)  # the next pass's FIFO, as the feeder makes it once a reader has the current
    read: list[bytes] = []

    def reader() -> None:
        with open(pending, "rb") as fifo:
            read.append(fifo.read())

    unlink = Path.unlink

    def a_reader_comes_first(path: Path, missing_ok: bool = False) -> None:
        if path == pending:  # the feeder is about to remove the name: a reader opens it now
            threading.Thread(target=reader, daemon=True).start()
            time.sleep(0.3)
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", a_reader_comes_first)
    feeder._abandon()
    deadline = time.monotonic() + 5
    while not read and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read == [b""], "the reader waited for a pass that never came"
    assert not pending.exists()


def test_a_pipe_that_cannot_be_fed_fails_the_job_naming_it(tmp_path: Path) -> None:
    """Gzip declared on plain data: the pass ends early, the next pass never hangs its reader,
    and the job fails naming the channel and the object, though the program itself succeeded."""
    backend = tiny_backend(tmp_path, """
        import os
        base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
        channel = os.path.join(base, "input", "data", "train")
        read = open(channel + "_0", "rb").read()
        try:
            open(channel + "_1", "rb").close()
        except FileNotFoundError:
            pass
        open(os.path.join(base, "model", "seen.json"), "w").write(repr(read))
    """)
    _put(backend, "rows/a.csv", b"not gzip\n")
    request: dict[str, Any] = {
        "TrainingJobName": "badgzip", "RoleArn": "arn:aws:iam::123456789012:role/local",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "InputDataConfig": [_channel("train", "rows", InputMode="Pipe", CompressionType="Gzip")],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60}}
    started = time.monotonic()
    job = backend.register(request)
    backend.execute(job)
    assert time.monotonic() - started < 30, "a reader waited for a pass that never came"
    assert job.status == "Failed"
    assert job.failure_reason is not None and job.failure_reason.startswith(
        "ClientError: channel 'train' could not be fed through its pipe: PipeFeedError: a.csv: ")
    assert "gzip" in job.failure_reason.lower()
    assert _feeders_alive() == []


def test_objects_are_in_s3_key_order_and_dealt_round_robin(tmp_path: Path) -> None:
    """S3 lists keys in UTF-8 binary order ("c.csv" before "c/d.csv", "a-1" before "a/b"), not a
    path-wise order; the shards deal that order."""
    names = ["c/d.csv", "a/b", "c.csv", "a-1", "e"]
    channel = _channel("train", "rows", distribution="ShardedByS3Key")
    delivered = [channel_data.delivery(channel, objects=[tmp_path / n for n in names], prefix_dir=tmp_path,
                                       training_input_mode="File", host_index=index, host_count=2)
                 for index in (0, 1)]
    shares = [[p.relative_to(tmp_path).as_posix() for p in d.objects] for d in delivered]
    assert shares == [["a-1", "c.csv", "e"], ["a/b", "c/d.csv"]]
    assert all(d.total_objects == 5 for d in delivered)
    paths = [tmp_path / name for name in ("a", "b", "c", "d", "e")]
    # More instances than objects: "some nodes won't get any data" (API reference, S3DataSource).
    assert channel_data.shard(paths[:1], host_index=1, host_count=2) == ()
    with pytest.raises(ValueError, match="host 2 is not one of 2"):
        channel_data.shard(paths, host_index=2, host_count=2)


@pytest.mark.parametrize(("channel", "training_mode", "refused"), [
    ({"CompressionType": "Gzip"}, "File", True),
    ({"CompressionType": "Gzip", "InputMode": "FastFile"}, "File", True),
    ({"CompressionType": "Gzip", "InputMode": "Pipe"}, "File", False),
    ({"CompressionType": "Gzip"}, "Pipe", False),  # the job's TrainingInputMode applies
    ({"CompressionType": "None"}, "File", False),
])
def test_the_strict_front_end_refuses_gzip_outside_pipe_mode(channel: dict[str, str], training_mode: str,
                                                            refused: bool) -> None:
    """"CompressionType is used only in Pipe input mode" (API reference, Channel.CompressionType):
    judged in training and tuning requests alike."""
    channels = [{**_channel("train", "rows"), **channel}]
    training = {"AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": training_mode},
                "InputDataConfig": channels}
    tuning = {"HyperParameterTuningJobConfig": {}, "TrainingJobDefinition": training}
    for operation, request in (("CreateTrainingJob", training), ("CreateHyperParameterTuningJob", tuning)):
        problems = rule_violations(operation, request)
        assert bool(problems) == refused, (operation, problems)
        if refused:
            assert "CompressionType Gzip is used only in Pipe input mode" in problems[0]
