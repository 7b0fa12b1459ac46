"""The BYOC training image: built from a Dockerfile and copied into the project's repository."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from cdk_ecr_deployment import DockerImageName, ECRDeployment
from constructs import Construct


class TrainingImage(Construct):
    """A Docker image asset, copied into ``repository`` under its asset hash.

    CDK pushes image assets to the bootstrap repository; training jobs should pull from the
    project's own (scanned, KMS-encrypted, retained) repository instead, so the image is copied
    there by ``cdk-ecr-deployment`` under an immutable tag: the asset hash, which changes only
    when the build context does. Building needs Docker at deploy time (not at synth).

    ``image_uri`` is the URI in ``repository`` that a training job uses.
    """

    def __init__(self, scope: Construct, construct_id: str, *, directory: Path,
                 repository: ecr.IRepository) -> None:
        super().__init__(scope, construct_id)
        if not (directory / "Dockerfile").is_file():
            raise ValueError(f"{directory} has no Dockerfile")
        self.asset = ecr_assets.DockerImageAsset(
            self, "Asset", directory=str(directory), platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.image_tag = self.asset.asset_hash
        self.image_uri = repository.repository_uri_for_tag(self.image_tag)
        self.copy = ECRDeployment(
            self, "CopyToRepository",
            src=DockerImageName(self.asset.image_uri),
            dest=DockerImageName(self.image_uri),
        )
