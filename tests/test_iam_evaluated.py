"""What the synthesized policies allow, evaluated (tests/iam_policy_eval.py), not only compared
as JSON: the guarantees of docs/security.md ("The rest of the security design") asked as
requests of the session's synthesized app (issue 19, item 11)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Synthesized
from tests.iam_policy_eval import ACCOUNT, REGION, Account, Request, decide, decide_kms

PASSED_TO = "iam:PassedToService"


@pytest.fixture(scope="module")
def account(synthesized: Synthesized) -> Account:
    return Account(storage=synthesized.storage, workflow=synthesized.workflow)


def _logical_id(template: dict[str, Any], prefix: str, kind: str) -> str:
    found: list[str] = [lid for lid, r in template["Resources"].items()
                        if lid.startswith(prefix) and r["Type"] == kind]
    (only,) = found
    return only


@pytest.fixture(scope="module")
def names(synthesized: Synthesized, account: Account) -> dict[str, str]:
    storage, workflow = synthesized.storage, synthesized.workflow
    return {
        "data": account.bucket_arn(_logical_id(storage, "BucketsData", "AWS::S3::Bucket")),
        "artifacts": account.bucket_arn(_logical_id(storage, "BucketsArtifacts", "AWS::S3::Bucket")),
        # digits_mlp's jobs run as this role; digits_lightgbm's as another; the shared role of
        # earlier releases is kept one release and passed to no job (docs/security.md).
        "execution_role": account.role_arn(_logical_id(storage, "ExecutionRoleDigitsMlpRole", "AWS::IAM::Role")),
        "other_program_role": account.role_arn(
            _logical_id(storage, "ExecutionRoleDigitsLightgbmRole", "AWS::IAM::Role")),
        "shared_role": account.role_arn(_logical_id(storage, "SageMakerExecutionRole", "AWS::IAM::Role")),
        "state_machine_role": account.role_arn(_logical_id(workflow, "TrainingStateMachineRole", "AWS::IAM::Role")),
    }


#: Every role a job may run as: each program's and the earlier shared one (sorted).
JOB_ROLES = ["ExecutionRoleDigitsLightgbmRole", "ExecutionRoleDigitsMlpRole", "ExecutionRoleDigitsXgboostRole",
             "SageMakerExecutionRole"]
TLS = {"aws:SecureTransport": "true"}
NO_TLS = {"aws:SecureTransport": "false"}


# -- the evaluator itself ---------------------------------------------------------------------
def test_the_evaluator_follows_aws_evaluation_logic() -> None:
    """Explicit Deny wins over Allow; NotAction/NotResource; wildcards; a missing key fails a
    condition but satisfies a negated one; Null."""
    allow_all = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny_put = {"Effect": "Deny", "Action": "s3:Put*", "Resource": "arn:aws:s3:::b/*"}
    who = f"arn:aws:iam::{ACCOUNT}:role/r"
    put = Request(who, "s3:PutObject", "arn:aws:s3:::b/k")
    assert decide(put, identity=[allow_all, deny_put]) == "Deny"
    assert decide(Request(who, "s3:GetObject", "arn:aws:s3:::b/k"), identity=[allow_all, deny_put]) == "Allow"
    assert decide(put, identity=[]) == "ImplicitDeny"
    not_action = {"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"}
    assert decide(put, identity=[not_action]) == "Allow"
    assert decide(Request(who, "IAM:PassRole", "x"), identity=[not_action]) == "ImplicitDeny"
    assert decide(Request(who, "s3:GetObject", "arn:aws:s3:::secret/k"), identity=[not_action]) == "ImplicitDeny"
    conditional = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                   "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}}
    negated = {**conditional, "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}}
    get = Request(who, "s3:GetObject", "arn:aws:s3:::b/k")
    assert decide(get, identity=[conditional]) == "ImplicitDeny"
    assert decide(get, identity=[negated]) == "Allow"
    null = {**conditional, "Condition": {"Null": {"aws:SourceVpce": "true"}}}
    assert decide(get, identity=[null]) == "Allow"
    assert decide(Request(who, "s3:GetObject", "x", {"aws:SourceVpce": "vpce-2"}), identity=[null]) == "ImplicitDeny"
    arn_like = {**conditional, "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:states:*:1:stateMachine:*"}}}
    assert decide(Request(who, "s3:GetObject", "x", {"aws:SourceArn": "arn:aws:states:eu-west-1:1:stateMachine:m"}),
                  identity=[arn_like]) == "Allow"
    assert decide(Request(who, "s3:GetObject", "x", {"aws:SourceArn": "arn:aws:states:eu-west-1:2:stateMachine:m"}),
                  identity=[arn_like]) == "ImplicitDeny"
    # ...IfExists: true without the key; ForAllValues: every value in the set, true without it.
    if_exists = {**conditional, "Condition": {"ArnEqualsIfExists": {"aws:SourceArn": "arn:aws:s3:::a"}}}
    assert decide(get, identity=[if_exists]) == "Allow"
    assert decide(Request(who, "s3:GetObject", "x", {"aws:SourceArn": "arn:aws:s3:::b"}),
                  identity=[if_exists]) == "ImplicitDeny"
    for_all = {**conditional, "Condition": {"ForAllValues:StringEquals": {"k": ["a", "b"]}}}
    assert decide(Request(who, "s3:GetObject", "x", {"k": ["a", "b"]}), identity=[for_all]) == "Allow"
    assert decide(Request(who, "s3:GetObject", "x", {"k": ["a", "c"]}), identity=[for_all]) == "ImplicitDeny"
    assert decide(get, identity=[for_all]) == "Allow"
    with pytest.raises(NotImplementedError):
        decide(get, identity=[{**conditional, "Condition": {"NumericLessThan": {"k": "1"}}}])


def test_a_key_is_used_only_as_its_key_policy_allows() -> None:
    """KMS: an IAM policy alone grants nothing; the key policy allows a principal itself, or the
    account (root), which hands the decision to IAM policies; an explicit Deny in either wins."""
    key, who = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k", f"arn:aws:iam::{ACCOUNT}:role/r"
    use = Request(who, "kms:Decrypt", key)
    iam_allows = [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key}]
    to_iam = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
              "Resource": "*"}
    to_role = {"Effect": "Allow", "Principal": {"AWS": who}, "Action": "kms:Decrypt", "Resource": "*"}
    assert decide_kms(use, identity=iam_allows, key_policy=[]) == "ImplicitDeny"
    assert decide_kms(use, identity=[], key_policy=[to_iam]) == "ImplicitDeny"
    assert decide_kms(use, identity=iam_allows, key_policy=[to_iam]) == "Allow"
    assert decide_kms(use, identity=[], key_policy=[to_role]) == "Allow"
    deny = {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    assert decide_kms(use, identity=iam_allows, key_policy=[to_iam, deny]) == "Deny"
    # Named only through the account, beside another principal or a service: IAM must allow too.
    mixed = {**to_iam, "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT}:root", f"arn:aws:iam::{ACCOUNT}:role/x"],
                                     "Service": "logs.amazonaws.com"}}
    assert decide_kms(use, identity=[], key_policy=[mixed]) == "ImplicitDeny"
    assert decide_kms(use, identity=iam_allows, key_policy=[mixed]) == "Allow"
    # Another account's role: the key policy must name it (or its account) and its own IAM allow.
    outsider = "arn:aws:iam::210987654321:role/r"
    other = Request(outsider, "kms:Decrypt", key)
    assert decide_kms(other, identity=iam_allows, key_policy=[to_iam]) == "ImplicitDeny"
    named = {**to_role, "Principal": {"AWS": outsider}}
    assert decide_kms(other, identity=[], key_policy=[named]) == "ImplicitDeny"
    assert decide_kms(other, identity=iam_allows, key_policy=[named]) == "Allow"


# -- the buckets ------------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", ["data", "artifacts"])
def test_a_request_without_tls_is_refused_even_to_a_role_that_may_read(
        account: Account, names: dict[str, str], bucket: str) -> None:
    """docs/security.md: the buckets deny any request not made over TLS (aws:SecureTransport)."""
    key = f"{names[bucket]}/{'datasets' if bucket == 'data' else 'checkpoints/digits_mlp'}/x.csv"
    role = names["execution_role"]
    assert account.decide(Request(role, "s3:GetObject", key, TLS)) == "Allow"
    assert account.decide(Request(role, "s3:GetObject", key, NO_TLS)) == "Deny"
    assert account.decide(Request(role, "s3:ListBucket", names[bucket],
                                  {**NO_TLS, "s3:prefix": "datasets/"})) == "Deny"


def test_no_role_may_delete_a_bucket(account: Account) -> None:
    """The buckets are retained: no role of either stack may delete one (nor change its policy)."""
    for role in account.roles():
        for bucket in account.buckets():
            for action in ("s3:DeleteBucket", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"):
                assert account.decide(Request(role, action, bucket, TLS)) != "Allow", (role, action, bucket)


# -- the SageMaker execution role -------------------------------------------------------------
def test_the_execution_role_reads_the_datasets_and_nothing_else_of_the_data_bucket(
        account: Account, names: dict[str, str]) -> None:
    role, data = names["execution_role"], names["data"]
    assert account.decide(Request(role, "s3:GetObject", f"{data}/datasets/digits_mlp/train/a.csv", TLS)) == "Allow"
    assert account.decide(Request(role, "s3:ListBucket", data, {**TLS, "s3:prefix": "datasets/digits_mlp/"})) == "Allow"
    assert account.decide(Request(role, "s3:ListBucket", data, {**TLS, "s3:prefix": "private/"})) != "Allow"
    assert account.decide(Request(role, "s3:ListBucket", data, TLS)) != "Allow"  # the whole bucket
    assert account.decide(Request(role, "s3:GetObject", f"{data}/private/a.csv", TLS)) != "Allow"
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert account.decide(Request(role, action, f"{data}/datasets/digits_mlp/train/a.csv", TLS)) != "Allow"


def test_the_execution_role_writes_only_models_and_checkpoints(account: Account, names: dict[str, str]) -> None:
    role, artifacts = names["execution_role"], names["artifacts"]
    allowed = {f"{artifacts}/models/digits_mlp/smtrain-1-0/output/model.tar.gz",
               f"{artifacts}/checkpoints/digits_mlp/smtrain-1/c.pt"}
    for key in allowed:
        assert account.decide(Request(role, "s3:PutObject", key, TLS)) == "Allow", key
    # Nor a registered model's frozen copy (registry/): an approved version cannot be swapped.
    for key in (f"{artifacts}/model-quality/smtrain-1-0.json", f"{artifacts}/other/x", f"{artifacts}/models",
                f"{names['data']}/datasets/digits_mlp/train/a.csv",
                f"{artifacts}/registry/smtrain-digits-mlp-1/smtrain-1-0/model.tar.gz"):
        assert account.decide(Request(role, "s3:PutObject", key, TLS)) != "Allow", key
    # A model once written is not the job's to delete or read back; checkpoints are.
    model = f"{artifacts}/models/digits_mlp/smtrain-1-0/output/model.tar.gz"
    assert account.decide(Request(role, "s3:DeleteObject", model, TLS)) != "Allow"
    assert account.decide(Request(role, "s3:GetObject", model, TLS)) != "Allow"
    checkpoint = f"{artifacts}/checkpoints/digits_mlp/smtrain-1/c.pt"
    assert account.decide(Request(role, "s3:GetObject", checkpoint, TLS)) == "Allow"


def test_one_program_s_jobs_cannot_touch_another_program_s_models_checkpoints_or_code(
        account: Account, names: dict[str, str], synthesized: Synthesized) -> None:
    """Each program's jobs run as its own role (docs/security.md, issue 21): a job of digits_mlp
    cannot overwrite digits_lightgbm's model, plant or read its checkpoints (a planted checkpoint
    is code the next job may load), nor read another program's code; digits_lightgbm's own role
    can. The earlier shared role, which could, is passed to no job (the PassRole test)."""
    mine, theirs, artifacts = names["execution_role"], names["other_program_role"], names["artifacts"]
    model = f"{artifacts}/models/digits_lightgbm/smtrain-1-0/output/model.tar.gz"
    checkpoint = f"{artifacts}/checkpoints/digits_lightgbm/smtrain-1/c.pt"
    for action, key in (("s3:PutObject", model), ("s3:AbortMultipartUpload", model),
                        ("s3:PutObject", checkpoint), ("s3:GetObject", checkpoint),
                        ("s3:DeleteObject", checkpoint)):
        assert account.decide(Request(mine, action, key, TLS)) != "Allow", (action, key)
        assert account.decide(Request(theirs, action, key, TLS)) == "Allow", (action, key)
    assert account.decide(Request(mine, "s3:ListBucket", artifacts,
                                  {**TLS, "s3:prefix": "checkpoints/digits_lightgbm/smtrain-1/"})) != "Allow"
    # A prefix that only starts like another program's name is not that program's.
    assert account.decide(Request(mine, "s3:PutObject", f"{artifacts}/models/digits_mlp_v2/x/model.tar.gz",
                                  TLS)) != "Allow"
    # The script program's code (the CDK asset bucket): its own role reads it, the others do not.
    (source,) = [s for s in account.identity_statements(mine) if s.get("Action") == "s3:GetObject"
                 and "cdk-hnb659fds-assets" in str(s.get("Resource"))]
    code = source["Resource"]
    assert account.decide(Request(mine, "s3:GetObject", code, TLS)) == "Allow"
    assert account.decide(Request(theirs, "s3:GetObject", code, TLS)) != "Allow"
    assert account.decide(Request(names["shared_role"], "s3:GetObject", code, TLS)) != "Allow"


def test_only_sagemaker_of_this_account_and_region_assumes_the_execution_role(
        account: Account, names: dict[str, str]) -> None:
    """Its trust policy: sagemaker.amazonaws.com with aws:SourceAccount and, as aws:SourceArn, a
    training or tuning job of the project (named smtrain-*) in the stack's region (docs/security.md;
    the confused deputy problem): not another SageMaker resource, not another project's job."""
    trust = account.trust_statements(names["execution_role"])
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/smtrain-1-0"

    def assume(principal: str, context: dict[str, str]) -> str:
        return decide(Request(principal, "sts:AssumeRole", names["execution_role"], context), resource=trust)

    sagemaker = "service:sagemaker.amazonaws.com"
    assert assume(sagemaker, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": job}) == "Allow"
    assert assume(sagemaker, {"aws:SourceAccount": "210987654321",
                              "aws:SourceArn": job.replace(ACCOUNT, "210987654321")}) != "Allow"
    elsewhere = job.replace(REGION, "eu-west-1")
    assert assume(sagemaker, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": elsewhere}) != "Allow"
    assert assume(sagemaker, {"aws:SourceAccount": ACCOUNT}) != "Allow"
    assert assume("service:lambda.amazonaws.com", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": job}) != "Allow"
    tuning = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:hyper-parameter-tuning-job/smtrain-0a1b2c3d4e5f-0"
    trial = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/smtrain-0a1b2c3d4e5f-0-001-9f8e7d6c"
    for ours in (tuning, trial):
        assert assume(sagemaker, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": ours}) == "Allow", ours
    for theirs in (job.replace("smtrain-", "other-"), f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/smtrain-1",
                   f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:notebook-instance/smtrain-1",
                   f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/smtrain-1"):
        assert assume(sagemaker, {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": theirs}) != "Allow", theirs


# -- the state machine's role -----------------------------------------------------------------
def test_only_this_state_machine_assumes_its_role(account: Account, names: dict[str, str]) -> None:
    """states.amazonaws.com, for this account and this state machine (smtrain-training) only: no
    other state machine of the account can run as its role."""
    trust = account.trust_statements(names["state_machine_role"])
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:smtrain-training"

    def assume(source_arn: str) -> str:
        context = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": source_arn}
        return decide(Request("service:states.amazonaws.com", "sts:AssumeRole", names["state_machine_role"],
                              context), resource=trust)

    assert assume(machine) == "Allow"
    assert assume(machine.replace("smtrain-training", "someone-elses")) != "Allow"
    assert assume(machine.replace(REGION, "eu-west-1")) != "Allow"


def test_the_state_machine_passes_only_the_execution_role_and_only_to_sagemaker(
        account: Account, names: dict[str, str]) -> None:
    """Each program's role, to SageMaker only; no other role (the earlier shared one included)."""
    machine = names["state_machine_role"]
    program_roles = [arn for arn, lid in account.roles().items() if lid.startswith("ExecutionRoleDigits")]
    assert len(program_roles) == 3 and names["execution_role"] in program_roles
    for execution_role in program_roles:
        assert account.decide(Request(machine, "iam:PassRole", execution_role,
                                      {PASSED_TO: "sagemaker.amazonaws.com"})) == "Allow"
        assert account.decide(Request(machine, "iam:PassRole", execution_role,
                                      {PASSED_TO: "ec2.amazonaws.com"})) != "Allow"
        assert account.decide(Request(machine, "iam:PassRole", execution_role)) != "Allow"
    for other in account.roles():
        if other not in program_roles:
            assert account.decide(Request(machine, "iam:PassRole", other,
                                          {PASSED_TO: "sagemaker.amazonaws.com"})) != "Allow", other


def test_the_state_machine_creates_only_its_own_jobs_and_pending_versions(
        account: Account, names: dict[str, str]) -> None:
    machine = names["state_machine_role"]
    sagemaker = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    ours, theirs = f"{sagemaker}:training-job/smtrain-1-0", f"{sagemaker}:training-job/other-1-0"
    # What every create request carries: the stack key for the model, an allowed instance type
    # (tests/test_job_security.py evaluates the real requests and their tampered copies).
    key = next(s["Condition"]["ArnEquals"]["sagemaker:OutputKmsKeyArn"]
               for s in account.identity_statements(machine) if "ArnEquals" in s.get("Condition", {}))
    create = {"sagemaker:OutputKmsKeyArn": key, "sagemaker:VolumeKmsKeyArn": key,
              "sagemaker:InstanceTypes": ["ml.m5.xlarge"],
              # The default network (sealed): the role allows isolated jobs only.
              "sagemaker:NetworkIsolation": "true"}
    assert account.decide(Request(machine, "sagemaker:CreateTrainingJob", ours, create)) == "Allow"
    assert account.decide(Request(machine, "sagemaker:CreateTrainingJob", ours)) != "Allow"
    assert account.decide(Request(machine, "sagemaker:CreateTrainingJob", theirs, create)) != "Allow"
    assert account.decide(Request(machine, "sagemaker:StopTrainingJob", theirs)) != "Allow"
    assert account.decide(Request(machine, "sagemaker:StopTrainingJob", ours)) == "Allow"
    assert account.decide(Request(machine, "sagemaker:CreateHyperParameterTuningJob",
                                  f"{sagemaker}:hyper-parameter-tuning-job/smtrain-1", create)) == "Allow"
    version = next(r for s in account.identity_statements(machine)
                   if "sagemaker:CreateModelPackage" in s["Action"] for r in s["Resource"])
    assert account.decide(Request(machine, "sagemaker:CreateModelPackage", version,
                                  {"sagemaker:ModelApprovalStatus": "PendingManualApproval"})) == "Allow"
    for status in ("Approved", None):
        context = {} if status is None else {"sagemaker:ModelApprovalStatus": status}
        assert account.decide(Request(machine, "sagemaker:CreateModelPackage", version, context)) != "Allow"
    assert account.decide(Request(machine, "sagemaker:UpdateModelPackage", version)) != "Allow"
    # It freezes a registered model under registry/ (and reads the job's model to copy it), but
    # writes no job's model.
    artifacts = names["artifacts"]
    assert account.decide(Request(machine, "s3:PutObject", f"{artifacts}/registry/g/smtrain-1-0/model.tar.gz",
                                  TLS)) == "Allow"
    assert account.decide(Request(machine, "s3:GetObject", f"{artifacts}/models/smtrain-1-0/output/model.tar.gz",
                                  TLS)) == "Allow"
    assert account.decide(Request(machine, "s3:PutObject", f"{artifacts}/models/smtrain-1-0/output/model.tar.gz",
                                  TLS)) != "Allow"


def test_objects_are_written_under_the_stack_key_only(synthesized: Synthesized, account: Account,
                                                      names: dict[str, str]) -> None:
    """A PutObject that asks for another encryption, another key, or SSE-KMS without a key id
    (which S3 answers with the AWS managed aws/s3 key: PutObject's API reference) is denied to
    everyone, the execution role included; no header (the bucket default: the stack key) or the
    stack key by ARN or id is allowed."""
    key_id = _logical_id(synthesized.storage, "DataKey", "AWS::KMS::Key")
    resolve = account._resolvers()[0][1]
    key_arn, bare_id = resolve.resource_arn(key_id), resolve({"Ref": key_id})
    model = f"{names['artifacts']}/models/digits_mlp/smtrain-1-0/output/model.tar.gz"
    sse = "s3:x-amz-server-side-encryption"
    kms_id = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    allowed = [{}, {sse: "aws:kms", kms_id: key_arn}, {sse: "aws:kms", kms_id: bare_id}]
    denied = [{sse: "AES256"}, {sse: "aws:kms:dsse", kms_id: key_arn},
              {sse: "aws:kms", kms_id: "arn:aws:kms:us-east-1:210987654321:key/theirs"},
              {sse: "aws:kms", kms_id: "alias/aws/s3"}, {sse: "aws:kms"}]
    for headers in allowed:
        assert account.decide(Request(names["execution_role"], "s3:PutObject", model, {**TLS, **headers})) \
            == "Allow", headers
    for headers in denied:
        assert account.decide(Request(names["execution_role"], "s3:PutObject", model, {**TLS, **headers})) \
            == "Deny", headers
    # Not under checkpoints/: how SageMaker's checkpoint sync asks for encryption is not
    # documented, so it is not risked (training_buckets.only_the_stack_key).
    checkpoint = f"{names['artifacts']}/checkpoints/digits_mlp/smtrain-1/c.pt"
    assert account.decide(Request(names["execution_role"], "s3:PutObject", checkpoint,
                                  {**TLS, sse: "aws:kms"})) == "Allow"
    # The data bucket too, for anyone (an administrator's upload through the console included).
    admin = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    upload = f"{names['data']}/datasets/digits_mlp/train/a.csv"
    assert decide(Request(admin, "s3:PutObject", upload, {**TLS, sse: "AES256"}),
                  resource=account.bucket_statements(names["data"])) == "Deny"


# -- the reviewer's questions, over every principal of both stacks -----------------------------
def test_who_can_read_the_data_decrypt_write_models_and_reach_outside(
        account: Account, names: dict[str, str]) -> None:
    """Issue 21's policy evaluation: every role of both stacks and every service the key policy
    names, asked the security review's questions through the identity, bucket and key policies
    together (a KMS key is used only as its key policy allows, directly or by handing the decision
    to the account's IAM policies: tests/iam_policy_eval.py, decide_kms). People of the account
    are not in the table: the key policy hands them to IAM by design (docs/security.md, "Who
    administers the stack key"). The shipped default app; the decrypt questions carry no
    encryption context, so CloudWatch Logs' use of the key for the stack's own log groups (its
    statement requires that group's context) is not counted, nor are the MLflow roles, which
    exist only with experimentTracking on (tests/test_experiment_tracking_stack.py)."""
    import re

    data, artifacts = names["data"], names["artifacts"]
    (key,) = [k for k in account.kms_keys() if "/DataKey" in k]
    through_s3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    questions = {
        "read the datasets": Request("", "s3:GetObject", f"{data}/datasets/digits_mlp/train/a.csv", TLS),
        "decrypt with the data key": Request("", "kms:Decrypt", key),
        "decrypt with the data key, through S3": Request("", "kms:Decrypt", key, through_s3),
        "write a model": Request("", "s3:PutObject", f"{artifacts}/models/digits_mlp/smtrain-1-0/output/model.tar.gz",
                                 TLS),
        "write a registered model": Request("", "s3:PutObject",
                                            f"{artifacts}/registry/g/smtrain-1-0/model.tar.gz", TLS),
        "write outside the account": Request("", "s3:PutObject", "arn:aws:s3:::someone-elses-bucket/loot.csv", TLS),
        "read outside the account": Request("", "s3:GetObject", "arn:aws:s3:::someone-elses-bucket/data.csv", TLS),
    }
    principals = {**{arn: re.sub("[0-9A-F]{8}$", "", lid) for arn, lid in account.roles().items()},
                  "service:delivery.logs.amazonaws.com": "delivery.logs",
                  "service:logs.us-east-1.amazonaws.com": "logs", "service:events.amazonaws.com": "events"}
    answers = {question: sorted(name for who, name in principals.items()
                                if account.decide(Request(who, asked.action, asked.resource, asked.context)) == "Allow")
               for question, asked in questions.items()}
    assert answers == {
        # Only the jobs read the training data (each program's role, and the earlier shared one).
        "read the datasets": JOB_ROLES,
        # The jobs (their volumes and output), and log delivery for the execution log (the Step
        # Functions guide's own statement: docs/security.md, "Failure alerts").
        "decrypt with the data key": [*JOB_ROLES, "delivery.logs"],
        # ... and the state machine, only through S3 (it copies a model under registry/).
        "decrypt with the data key, through S3": sorted([*JOB_ROLES, "TrainingStateMachineRole",
                                                         "delivery.logs"]),
        # A program's model: its own role's jobs (and the shared role, which no job runs as now).
        "write a model": ["ExecutionRoleDigitsMlpRole", "SageMakerExecutionRole"],
        # No job may touch a registered model: only the state machine freezes one.
        "write a registered model": ["TrainingStateMachineRole"],
        "write outside the account": [],
        "read outside the account": [],
    }
