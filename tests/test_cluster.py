"""A job on several instances, run offline as SageMaker runs it (smtrain.local.cluster): one
process per instance, each with its own /opt/ml (a ShardedByS3Key channel holds only that
instance's shard), the instances reaching each other by name in a network of the job's own, one
log per instance, the model aggregated from every instance; an instance that fails ends the job
with its reason; stopping the job stops every instance. Where this machine cannot run a cluster,
the first instance runs alone and the job says why."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from smtrain.local import cluster, isolation, local_backend, opt_ml
from smtrain.local.local_backend import LocalBackend
from smtrain.local.sagemaker_rules import rule_violations
from tests.test_channel_modes import _channel, _put
from tests.test_local_containers import model_files, run
from tests.test_local_failures import IMAGE, tiny_backend

pytestmark = pytest.mark.skipif(
    not (isolation.probe().available and opt_ml.probe().available),
    reason="this machine cannot give a process network and mount namespaces")

#: Every instance: what resourceconfig.json says, its shard, every host's address; algo-1 waits
#: for a line from each other instance over TCP (by name, on one port), the others send theirs.
#: Each writes model/<host>.json (no names clash) and prints a line of its own.
CLUSTER_PROGRAM = """
    import json, os, socket, time
    config = json.load(open("/opt/ml/input/config/resourceconfig.json"))
    me, hosts = config["current_host"], config["hosts"]
    shard = sorted(os.path.relpath(os.path.join(d, f), "/opt/ml/input/data/train")
                   for d, _, fs in os.walk("/opt/ml/input/data/train") for f in fs)
    heard = []
    if me == hosts[0]:
        server = socket.create_server(("algo-1", 7777))
        server.settimeout(60)
        for _ in hosts[1:]:
            connection, _ = server.accept()
            heard.append(connection.makefile().readline().strip())
    else:
        for attempt in range(300):
            try:
                with socket.create_connection(("algo-1", 7777), timeout=5) as connection:
                    connection.sendall(f"hello from {me}\\n".encode())
                break
            except OSError:
                time.sleep(0.1)
    seen = {"config": config, "shard": shard, "heard": sorted(heard),
            "addresses": {host: socket.gethostbyname(host) for host in hosts}}
    json.dump(seen, open(f"/opt/ml/model/{me}.json", "w"))
    print(f"{me} done with {len(shard)} objects", flush=True)
"""


def _request(name: str, *, instance_count: int, channels: list[dict[str, Any]] | None = None,
             max_runtime: int = 120) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "InputDataConfig": channels or [_channel("train", "rows", distribution="ShardedByS3Key")],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": instance_count,
                           "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }
    assert rule_violations("CreateTrainingJob", request) == []
    return request


def _backend(tmp_path: Path, program: str, lines: list[tuple[str, str]] | None = None) -> LocalBackend:
    backend = tiny_backend(tmp_path, program, lines=lines)
    for key in ("a.csv", "b.csv", "c/d.csv", "e.csv", "f.csv"):
        _put(backend, f"rows/{key}", b"1\n")
    return backend


def test_each_instance_gets_its_shard_and_reaches_the_others_by_name(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    backend = _backend(tmp_path, CLUSTER_PROGRAM, lines)
    job = run(backend, _request("three", instance_count=3))
    assert job.status == "Completed", job.failure_reason

    seen = {name.removesuffix(".json"): json.loads(body)
            for name, body in model_files(backend, job).items()}
    # model.tar.gz aggregates every instance's /opt/ml/model (developer guide, training output).
    assert sorted(seen) == ["algo-1", "algo-2", "algo-3"]
    # Five keys dealt round robin over three instances (smtrain.local.channel_data.shard).
    assert {host: s["shard"] for host, s in seen.items()} == {
        "algo-1": ["a.csv", "e.csv"], "algo-2": ["b.csv", "f.csv"], "algo-3": ["c/d.csv"]}
    # The union of the instances' inputs is the channel, no object twice.
    every = [name for s in seen.values() for name in s["shard"]]
    assert sorted(every) == sorted(set(every)) == ["a.csv", "b.csv", "c/d.csv", "e.csv", "f.csv"]
    for host, s in seen.items():
        assert s["config"]["current_host"] == host
        assert s["config"]["hosts"] == ["algo-1", "algo-2", "algo-3"]
        assert s["config"]["instance_groups"][0]["hosts"] == ["algo-1", "algo-2", "algo-3"]
        # Each instance's name has an address of its own on loopback, the same for every reader.
        assert s["addresses"] == {"algo-1": "127.1.0.1", "algo-2": "127.1.0.2", "algo-3": "127.1.0.3"}
    assert seen["algo-1"]["heard"] == ["hello from algo-2", "hello from algo-3"]

    # One log per instance, as SageMaker keeps one stream per instance; the job's is algo-1's.
    job_dir = backend.work_dir / "jobs" / "three"
    assert job.log_path == job_dir / "log.txt"
    assert "algo-1 done with 2 objects" in job.log_path.read_text()
    assert "algo-2 done" not in job.log_path.read_text(), "algo-2's output is in its own log"
    assert (job_dir / "hosts" / "algo-2" / "log.txt").read_text() == "algo-2 done with 2 objects\n"
    assert ("three", "[algo-3] algo-3 done with 1 objects") in lines
    assert any("ShardedByS3Key: this instance (algo-3, 3 of 3) got 1 of its 5 objects" in n
               for n in job.notes)
    assert not any("same name in /opt/ml/model" in n for n in job.notes)


def test_names_that_clash_in_the_model_keep_the_first_instance_s_and_say_so(tmp_path: Path) -> None:
    backend = _backend(tmp_path, """
        import json
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        open("/opt/ml/model/model.txt", "w").write(me)
    """)
    job = run(backend, _request("clash", instance_count=2))
    assert job.status == "Completed", job.failure_reason
    assert model_files(backend, job) == {"model.txt": b"algo-1"}
    assert any("instances wrote the same name in /opt/ml/model: model.txt (algo-1 and algo-2)" in n
               for n in job.notes)


def test_an_instance_that_fails_ends_the_job_with_its_reason(tmp_path: Path) -> None:
    """algo-2 writes its failure file and exits 1 while algo-1 would wait a minute: the job
    fails at once with algo-2's reason, and algo-1 was ended."""
    backend = _backend(tmp_path, """
        import json, time
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        if me == "algo-2":
            open("/opt/ml/output/failure", "w").write("algo-2 found no rows in its shard")
            raise SystemExit(1)
        time.sleep(60)
    """)
    started = time.monotonic()
    job = run(backend, _request("failing", instance_count=2))
    assert time.monotonic() - started < 40, "algo-1 was left running after algo-2 failed"
    assert job.status == "Failed"
    assert job.failure_reason == "AlgorithmError: algo-2 found no rows in its shard"
    assert any(n.startswith("algo-2 exited with code 1, which ended the job") for n in job.notes)


def _processes_running(path: Path) -> list[int]:
    """This machine's processes whose command line names ``path`` (a test's own program)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass  # ended meanwhile
    return found


def test_stopping_the_job_stops_every_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while both instances run (one ignores SIGTERM, as a program may): the job is
    Stopped and no process of either instance is left once the grace period (1 s here) ends."""
    terminate = local_backend._terminate_group
    monkeypatch.setattr(local_backend, "_terminate_group",
                        lambda process, grace_seconds=1.0: terminate(process, grace_seconds))
    backend = _backend(tmp_path, """
        import json, signal, time
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        if me == "algo-2":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"{me} started", flush=True)
        time.sleep(120)
    """)
    program = tmp_path / "context" / "tiny" / "train"
    job = backend.register(_request("stopped", instance_count=2))
    runner = threading.Thread(target=backend.execute, args=(job,))
    runner.start()
    job_dir = backend.work_dir / "jobs" / "stopped"
    logs = [job_dir / "log.txt", job_dir / "hosts" / "algo-2" / "log.txt"]
    deadline = time.monotonic() + 60
    while not all(log.is_file() and " started" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "the instances did not start"
        time.sleep(0.1)
    assert len(_processes_running(program)) >= 2
    backend.stop_training_job("stopped")
    runner.join(timeout=40)
    assert not runner.is_alive()
    assert job.status == "Stopped"
    assert _processes_running(program) == []


def test_without_namespaces_the_first_instance_runs_alone_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "probe", lambda: isolation.Isolation(prefix=None, reason="no unshare"))
    backend = _backend(tmp_path, """
        import json, os
        config = json.load(open("/opt/ml/input/config/resourceconfig.json"))
        shard = sorted(os.listdir("/opt/ml/input/data/train"))
        json.dump([config["hosts"], shard], open(f"/opt/ml/model/{config['current_host']}.json", "w"))
    """)
    job = run(backend, _request("alone", instance_count=2))
    assert job.status == "Completed", job.failure_reason
    assert {name: json.loads(body) for name, body in model_files(backend, job).items()} == {
        "algo-1.json": [["algo-1"], ["a.csv", "c", "f.csv"]]}
    assert any(n.startswith("InstanceCount 2: only algo-1 ran here (its shards only), since this "
                            "machine cannot run the 2 instances as a cluster: no unshare") for n in job.notes)


def test_each_instance_reads_its_own_shard_through_its_own_pipe(tmp_path: Path) -> None:
    """Pipe mode on several instances: each instance's FIFO streams only its shard."""
    backend = _backend(tmp_path, """
        import json
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        with open("/opt/ml/input/data/train_0", "rb") as pipe:
            open(f"/opt/ml/model/{me}.txt", "wb").write(pipe.read())
    """)
    for key, body in (("a.csv", b"a\n"), ("b.csv", b"b\n"), ("c/d.csv", b"d\n"), ("e.csv", b"e\n"),
                      ("f.csv", b"f\n")):
        _put(backend, f"rows/{key}", body)
    job = run(backend, _request("piped", instance_count=2, channels=[
        _channel("train", "rows", distribution="ShardedByS3Key", InputMode="Pipe")]))
    assert job.status == "Completed", job.failure_reason
    assert model_files(backend, job) == {"algo-1.txt": b"a\nd\nf\n", "algo-2.txt": b"b\ne\n"}


def test_isolated_instances_reach_each_other_and_nothing_else(tmp_path: Path) -> None:
    """EnableNetworkIsolation on two instances: they still reach each other by name (SageMaker's
    isolated instances talk to each other), an address outside the machine is unreachable, and
    the job says it ran isolated."""
    backend = _backend(tmp_path, CLUSTER_PROGRAM + """
    try:
        socket.create_connection(("192.0.2.1", 443), timeout=5)
        outside = "reached"
    except OSError as error:
        outside = error.strerror
    open(f"/opt/ml/model/{me}-outside.txt", "w").write(outside)
""")
    job = run(backend, {**_request("isolated", instance_count=2), "EnableNetworkIsolation": True})
    assert job.status == "Completed", job.failure_reason
    files = model_files(backend, job)
    assert json.loads(files["algo-1.json"])["heard"] == ["hello from algo-2"]
    assert files["algo-1-outside.txt"] == files["algo-2-outside.txt"] == b"Network is unreachable"
    assert any(n.startswith("network isolation (EnableNetworkIsolation): the instances' network "
                            "namespace has only a loopback interface") for n in job.notes)


def test_an_instance_that_ignores_sigterm_is_killed_after_the_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """algo-2 fails; algo-1 ignores the SIGTERM that ends the others: SIGKILL after the grace
    period, the job fails with algo-2's reason, and no process is left."""
    monkeypatch.setattr(cluster, "GRACE_SECONDS", 0.3)
    backend = _backend(tmp_path, """
        import json, signal, time
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        if me == "algo-2":
            time.sleep(1)
            raise SystemExit("algo-2 gave up")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
    """)
    started = time.monotonic()
    job = run(backend, _request("stubborn", instance_count=2))
    assert time.monotonic() - started < 30
    assert job.status == "Failed"
    assert job.failure_reason is not None and "algo-2 gave up" in job.failure_reason
    assert _processes_running(tmp_path / "context" / "tiny" / "train") == []


def test_a_file_and_a_directory_of_one_name_clash(tmp_path: Path) -> None:
    """algo-1 writes the file weights, algo-2 a directory weights/: the archive keeps the file
    only (it would not extract with both) and the job says so."""
    backend = _backend(tmp_path, """
        import json, os
        me = json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"]
        if me == "algo-1":
            open("/opt/ml/model/weights", "w").write("file")
        else:
            os.mkdir("/opt/ml/model/weights")
            open("/opt/ml/model/weights/part", "w").write("dir")
    """)
    job = run(backend, _request("kinds", instance_count=2))
    assert job.status == "Completed", job.failure_reason
    assert model_files(backend, job) == {"weights": b"file"}
    assert any("weights (algo-1 and algo-2)" in n for n in job.notes)
