"""``network: vpc`` in the VPC the stack creates: the workflow stack reads its subnets and group
through Fn::GetStackOutput, every job runs there and stays tracked (its own module: one offline
engine serves SageMaker per process at a time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtrain.core import contract
from tests.helpers import Synthesized
from tests.scripted_sagemaker import ScriptedBackend, scripted_engine
from tests.test_job_security import Runs


@pytest.fixture(scope="module")
def created_vpc(vpc_with_tracking_server: Synthesized,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """``network: vpc`` in the VPC the stack creates, with the MLflow tracking server: the
    workflow stack reads the subnets and group through Fn::GetStackOutput."""
    app = vpc_with_tracking_server
    backend = ScriptedBackend()
    with scripted_engine(outdir=app.outdir, work_dir=tmp_path_factory.mktemp("vpc-work"),
                       backend=backend) as engine:
        yield Runs(engine, backend)


def test_created_vpc_jobs_run_in_its_subnets_and_are_tracked(created_vpc: Runs) -> None:
    outputs = created_vpc.engine.deployment.outputs
    subnets = outputs["TrainingSubnetIds"].split(",")
    groups = outputs["TrainingSecurityGroupIds"].split(",")
    assert len(set(subnets)) == 2 and all(s.startswith("subnet-") for s in subnets)
    assert len(groups) == 1 and groups[0].startswith("sg-")
    result, ((_, training),) = created_vpc.run({"program": "digits_mlp"})
    assert result.succeeded, result.cause
    assert training["VpcConfig"] == {"SecurityGroupIds": groups, "Subnets": subnets}
    assert "EnableNetworkIsolation" not in training
    assert training["Environment"][contract.ENV_TRACKING_URI], "vpc mode reaches MLflow"
    assert training["HyperParameters"]["sagemaker_submit_directory"].startswith("s3://"), \
        "without isolation the toolkit downloads the code itself"
    result, requests = created_vpc.run({"program": "digits_lightgbm",
                                        "tuning": {"maxJobs": 2, "maxParallelJobs": 1}})
    assert result.succeeded, result.cause
    definition = requests[0][1]["TrainingJobDefinition"]
    assert definition["VpcConfig"] == {"SecurityGroupIds": groups, "Subnets": subnets}
    assert "EnableNetworkIsolation" not in definition
