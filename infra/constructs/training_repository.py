"""The ECR repository that holds the BYOC training image."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct


class TrainingRepository(Construct):
    """A private ECR repository for training images.

    Guarantees: scan on push, immutable tags (an image tag always names the same image, so a job
    can be reproduced), KMS encryption with ``key``, a lifecycle rule that keeps the newest
    ``max_images`` images (default 20) and drops untagged ones after one day, and retention on
    stack deletion (images are not emptied). The name is generated, so that a new deployment
    after ``cdk destroy`` never collides with the retained repository.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey,
                 max_images: int = 20) -> None:
        super().__init__(scope, construct_id)
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
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
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=f"Keep the newest {max_images} images",
                    tag_status=ecr.TagStatus.ANY,
                    max_image_count=max_images,
                ),
            ],
        )
