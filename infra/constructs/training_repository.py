"""The ECR repository that holds the BYOC training image."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct


class TrainingRepository(Construct):
    """A private ECR repository for training images.

    Guarantees: scan on push, immutable tags (an image tag always names the same image, so a job
    can be reproduced), KMS encryption with ``key``, a lifecycle rule that drops untagged images
    after one day and never a tagged one, and retention on stack deletion (images are not
    emptied). A tagged image is one a training job or a registered model version may name (a
    BYOC model package's inference image is the image it trained with): expiring the oldest by
    count would leave an approved version with an image that no longer exists. The name is
    generated, so that a new deployment after ``cdk destroy`` never collides with the retained
    repository. Tagged images are never expired, so the repository grows by each new BYOC image
    (layers it already holds are shared): delete the images of versions you no longer need.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.repository = ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=key,
            removal_policy=RemovalPolicy.RETAIN,
            empty_on_delete=False,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description="Drop untagged images after a day",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(1),
                ),
            ],
        )
