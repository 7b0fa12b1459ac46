"""The request matrix on every framework: each brought script program (one per framework, written
as public examples are) x training and tuning x spot x one and two instances x every ``network``
mode, run through the synthesized workflow with the scripted SageMaker.

Every create request is judged by the engine's strict front end (botocore's model and the API
reference's rules): a request it refuses fails the execution, and the run must succeed. Each
request must also name the framework's image for the region and carry what the network mode
(``VpcConfig``, ``EnableNetworkIsolation``, the code channel), the capacity (managed spot and its
wait) and the instance count (the program's distribution, traffic encryption) say. A framework
whose program declares no distribution is refused on two instances before any request.

The three apps are synthesized once per run (``synthesized_once``); under ``vpc`` and
``isolated`` the brought programs go without their requirements files (vendoring them as wheels is
``tests/test_source_bundle.py``'s and ``tests/test_local_isolation.py``'s business).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from infra.stacks.workflow_stack import script_images
from smtrain.core import contract, programs
from smtrain.local.engine import OfflineEngine
from tests.conftest import BROUGHT_FRAMEWORKS, synthesize, synthesized_once
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

NETWORKS = ("sealed", "public", "vpc", "isolated")
#: Every option a distribution may add (none on one instance).
DISTRIBUTION_OPTIONS = {name for options in contract.DISTRIBUTION_HYPERPARAMETERS.values()
                        for name in options}


@pytest.fixture(scope="module", params=NETWORKS)
def network_app(request: pytest.FixtureRequest, cdk_context: dict[str, Any], settings: Settings,
                brought_training_code: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[str, Synthesized]:
    network: str = request.param
    if network == settings.network:  # the shipped default, sealed: the session's app
        app: Synthesized = request.getfixturevalue("with_brought_programs")
        return network, app

    def build(outdir: Path) -> Synthesized:
        code = outdir.parent / f"{outdir.name}-code"
        shutil.copytree(brought_training_code, code)
        if network != "public":  # no wheels to vendor: tests/test_source_bundle.py vendors them
            for requirements in code.glob("*/requirements.txt"):
                if (requirements.parent / "Dockerfile").exists():
                    continue  # a BYOC image's: its Dockerfile installs them at build
                requirements.unlink()
        return synthesize(cdk_context, dataclasses.replace(settings, network=network), outdir,
                          training_code_dir=code)

    return network, synthesized_once(f"cdk.out-byo-{network}", tmp_path_factory, build)


@pytest.fixture(scope="module")
def scripted(network_app: tuple[str, Synthesized], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[str, OfflineEngine, ScriptedBackend]]:
    network, app = network_app
    backend = ScriptedBackend()
    with scripted_engine(outdir=app.outdir, work_dir=tmp_path_factory.mktemp(f"matrix-{network}"),
                         backend=backend) as engine:
        yield network, engine, backend


#: Per network mode, (training or tuning, spot, instances): each mode runs both kinds, on spot
#: and on demand, on one and two instances, and over the three modes every pair of those values
#: meets (a covering array: 30 executions instead of the full product's 60).
RUNS = {"sealed": (("training", False, 2), ("tuning", True, 1)),
        "public": (("training", True, 2), ("tuning", False, 1)),
        "vpc": (("training", False, 1), ("tuning", True, 2)),
        "isolated": (("training", True, 1), ("tuning", False, 2))}


def test_each_mode_says_at_synth_what_containers_reach(network_app: tuple[str, Synthesized]) -> None:
    """One info notice per synth (the CDK CLI prints it at synth and deploy), the mode's own:
    public's says containers reach the internet, and only public's."""
    from infra.stacks.workflow_stack import NETWORK_NOTICES

    network, app = network_app
    notices = [m[2] for m in app.messages if m[0].rsplit(".", 1)[-1].lower() == "info"
               and str(m[2]).startswith("network: ")]
    assert notices == [NETWORK_NOTICES[network]]
    assert ("reach the internet" in notices[0]) == (network == "public")


@pytest.mark.parametrize("framework", sorted(BROUGHT_FRAMEWORKS))
def test_every_framework_run_in_every_network_mode_sends_valid_requests(
        scripted: tuple[str, OfflineEngine, ScriptedBackend], settings: Settings,
        framework: str) -> None:
    network, engine, backend = scripted
    name = BROUGHT_FRAMEWORKS[framework]
    program = programs.load(Path(__file__).parent / "fixtures" / "programs" / name)
    images = script_images(settings, program)
    on_gpu = images.training_cpu is None  # Hugging Face: GPU builds only
    instance_type = "ml.g5.xlarge" if on_gpu else "ml.m5.xlarge"
    for kind, spot, count in RUNS[network]:
        execution_input: dict[str, Any] = {"program": name, "instanceType": instance_type,
                                           "instanceCount": count, "spot": spot}
        if kind == "tuning":
            execution_input["tuning"] = {"strategy": "Random", "maxJobs": 2, "maxParallelJobs": 1}
        backend.script = JobScript(metrics=[(metric, 0.9) for metric in program.metric_names])
        backend.requests.clear()
        run = f"{framework}-{network}-{kind}-{'spot' if spot else 'on-demand'}-{count}"
        result = engine.run(execution_input, name=f"mx-{run}"[:80], timeout=120)
        if count > 1 and program.distribution is None:
            # Its image would run one copy per instance: refused before any request.
            assert (result.status, result.error) == ("FAILED", contract.INVALID_INPUT_ERROR), run
            assert result.cause is not None and "field 'instanceCount' must be 1" in result.cause
            assert not backend.requests, run
            continue
        assert result.succeeded, (run, result.error, result.cause)
        if kind == "training":
            (job,) = backend.created("create_training_job")
            hyperparameters = job["HyperParameters"]
        else:
            (tuning_request,) = backend.created("create_hyper_parameter_tuning_job")
            job = tuning_request["TrainingJobDefinition"]
            hyperparameters = job["StaticHyperParameters"]
        _assert_job(job, hyperparameters, run=run, network=network, spot=spot, count=count,
                    image=images.training_gpu if on_gpu else images.training_cpu,
                    distribution=program.distribution, settings=settings)


def _assert_job(job: dict[str, Any], hyperparameters: dict[str, str], *, run: str, network: str,
                spot: bool, count: int, image: str | None, distribution: str | None,
                settings: Settings) -> None:
    assert job["AlgorithmSpecification"]["TrainingImage"] == image, run
    assert job["ResourceConfig"]["InstanceCount"] == count, run
    # The network: none of the project's in public and sealed mode; the stack's VPC otherwise,
    # and no network at all for the containers in isolated and sealed mode, whose code arrives as
    # a channel.
    assert ("VpcConfig" in job) == (network in ("vpc", "isolated")), run
    isolated = network in ("isolated", "sealed")
    assert job.get("EnableNetworkIsolation", False) == isolated, run
    channels = [channel["ChannelName"] for channel in job.get("InputDataConfig", [])]
    assert (contract.CODE_CHANNEL in channels) == isolated, run
    submitted = hyperparameters["sagemaker_submit_directory"]
    assert submitted.startswith(f"{contract.CODE_CHANNEL_DIR}/" if isolated else "s3://"), run
    # Capacity: managed spot with its wait, or on demand.
    assert job.get("EnableManagedSpotTraining", False) == spot, run
    assert ("MaxWaitTimeInSeconds" in job["StoppingCondition"]) == spot, run
    if spot:
        assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] == settings.spot_max_wait_seconds
    # Two instances: the program's distribution and encrypted traffic between them.
    sent = {key: value for key, value in hyperparameters.items() if key in DISTRIBUTION_OPTIONS}
    expected = contract.DISTRIBUTION_HYPERPARAMETERS[distribution] if count > 1 and distribution else {}
    assert sent == expected, run
    assert job.get("EnableInterContainerTrafficEncryption", False) == (
        count > 1 and settings.inter_container_traffic_encryption), run
