"""The BYOC training image: built from a Dockerfile and copied into the project's repository."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import CustomResource, Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.compliance import DEPLOY_TIME_FUNCTION_RULES, acknowledge

#: The copy function's code: one standard-library + boto3 module, no bundling.
COPY_HANDLER_DIR = Path(__file__).resolve().parent / "image_copy"
#: The platform the image is built for, and the one the copy picks out of an image index.
PLATFORM = ecr_assets.Platform.LINUX_AMD64
#: Lambda's maximum; a copy that needs longer reports FAILED itself shortly before and resumes on
#: the next deploy (blobs already in the repository are skipped).
COPY_TIMEOUT = Duration.minutes(15)


class TrainingImage(Construct):
    """A Docker image asset, copied into ``repository`` under its asset hash.

    CDK pushes image assets to the bootstrap repository; training jobs pull from the project's
    own (scanned, KMS-encrypted, retained, immutable-tag) repository instead. A custom resource of
    ours (``image_copy/handler.py``) copies the image there with the ECR API alone, under the
    asset hash as tag, which changes only when the build context does. The copy is idempotent:
    a tag that already holds the same image is left alone (a deploy after ``cdk destroy``, a
    rollback), a tag that holds another image fails the deploy with a message, Delete does
    nothing (the repository is retained; its lifecycle policy expires old images). Building
    needs Docker at deploy time (not at synth).

    The copy function runs as a role that can read only the bootstrap asset repository, push
    only to ``repository`` and write only to its own log group; the custom resource depends on
    that role's policy, so it never runs before its permissions exist.

    ``directory`` is the build context (its ``.dockerignore`` applies, also to the asset hash)
    and ``dockerfile`` the Dockerfile's path inside it (default ``Dockerfile``); ``include``
    (default: everything) names the only folders of the context the build sees. ``image_uri`` is
    the URI in ``repository`` that a training job uses; ``copy`` is the custom resource to depend
    on before using it; ``image_digest`` its manifest digest (a deploy-time attribute).
    """

    def __init__(self, scope: Construct, construct_id: str, *, directory: Path,
                 repository: ecr.IRepository, dockerfile: str = "Dockerfile",
                 include: Sequence[str] | None = None,
                 log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH) -> None:
        super().__init__(scope, construct_id)
        if not (directory / dockerfile).is_file():
            raise ValueError(f"{directory} has no {dockerfile}")
        # With ``include``, only those folders of the context are staged (and hashed): a change
        # elsewhere in it neither rebuilds nor re-tags the image. Python's bytecode cache never
        # is (a program's tests write it beside the code), in any context.
        bytecode = ["**/__pycache__", "**/*.pyc"]
        exclude = bytecode if include is None else [
            "*", *(f"!{folder.rstrip('/')}/" for folder in include), *bytecode,
        ]
        self.asset = ecr_assets.DockerImageAsset(
            self, "Asset", directory=str(directory), file=dockerfile, platform=PLATFORM,
            exclude=exclude, ignore_mode=None if include is None else IgnoreMode.DOCKER,
        )
        self.image_tag = self.asset.asset_hash
        self.image_uri = repository.repository_uri_for_tag(self.image_tag)

        log_group = logs.LogGroup(self, "CopyLogs", retention=log_retention,
                                  removal_policy=RemovalPolicy.DESTROY)
        copy_role = iam.Role(
            self, "CopyRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Copies the BYOC training image into the project's repository",
        )
        # The ECR actions the handler calls, and nothing else: the API copy authenticates every
        # call with IAM, so it needs no ecr:GetAuthorizationToken (a Docker registry login); the
        # layer download URL is pre-signed. ECR, not the caller, uses the repository's KMS key
        # (ECR grants itself access when the repository is created), so no KMS actions either.
        copy_policy = iam.ManagedPolicy(self, "CopyPolicy", roles=[copy_role], statements=[
            iam.PolicyStatement(
                sid="PullAsset",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[self.asset.repository.repository_arn],
            ),
            iam.PolicyStatement(
                sid="PushToProjectRepository",
                actions=["ecr:BatchGetImage", "ecr:BatchCheckLayerAvailability",
                         "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                         "ecr:CompleteLayerUpload", "ecr:PutImage"],
                resources=[repository.repository_arn],
            ),
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            ),
        ])
        function = lambda_.Function(
            self, "CopyFunction",
            description="Copies the BYOC training image into the project's repository (custom resource)",
            # The newest Python runtime this aws-cdk-lib knows (AwsSolutions-L1 asks for it); the
            # handler needs only the standard library and the runtime's boto3.
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(COPY_HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            role=copy_role,
            timeout=COPY_TIMEOUT,
            memory_size=1024,
            log_group=log_group,
            # CloudFormation invokes the function asynchronously; the handler answers it for
            # every outcome, so Lambda's automatic retries would only send a second answer.
            retry_attempts=0,
        )
        function.node.add_dependency(copy_policy)
        self.copy = CustomResource(
            self, "CopyToRepository",
            service_token=function.function_arn,
            resource_type="Custom::EcrImageCopy",
            properties={
                "SourceRepositoryName": self.asset.repository.repository_name,
                "SourceImageTag": self.asset.image_tag,
                "DestinationRepositoryName": repository.repository_name,
                "DestinationImageTag": self.image_tag,
                "Platform": PLATFORM.platform,
            },
            # Bounds the wait if the function never answers (CloudFormation's default is 1 hour).
            service_timeout=COPY_TIMEOUT.plus(Duration.minutes(1)),
        )
        # Finding 12: the role's policy is a resource of its own; without this the copy could
        # run before the policy is attached and be denied.
        self.copy.node.add_dependency(copy_policy)
        self.image_digest = self.copy.get_att_string("ImageDigest")
        self._acknowledge(function, log_group)

    @staticmethod
    def _acknowledge(function: lambda_.Function, log_group: logs.LogGroup) -> None:
        acknowledge(
            function, DEPLOY_TIME_FUNCTION_RULES,
            "Deploy-time custom resource: CloudFormation invokes it once per image change and the "
            "handler reports every outcome (timeouts included) to CloudFormation, so no concurrency "
            "limit or DLQ applies; it only copies an image between two ECR repositories over the "
            "AWS API and handles no training data.",
        )
        acknowledge(
            log_group,
            ["HIPAA.Security-CloudWatchLogGroupEncrypted", "NIST.800.53.R5-CloudWatchLogGroupEncrypted",
             "PCI.DSS.321-CloudWatchLogGroupEncrypted"],
            "The image copy's log holds only repository names, tags, digests and byte counts (no "
            "training data or secrets); CloudWatch Logs encrypts it at rest with its own keys.",
        )
