"""The SageMaker Model Registry of the project: one model package group per training program."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import CfnOutput, Fn, RemovalPolicy, Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from smtrain.core import contract

#: ``ModelPackageGroupName`` (botocore's sagemaker model, CreateModelPackageGroup): 1-63
#: characters of ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``.
MAX_GROUP_NAME = 63
#: The part of the name unique to one creation of the stack: the first 8 hex digits of the
#: stack id's UUID (``arn:...:stack/<name>/<uuid>``; CloudFormation gives a new stack a new id).
CREATION_ID_LENGTH = 8


@dataclass(frozen=True)
class ModelPackageGroup:
    """A program's group, as the storage stack publishes it: its name and the ARN pattern of its
    versions (``arn:<partition>:sagemaker:<region>:<account>:model-package/<name>/*``), each a
    plain output of that stack (:attr:`name_output`, :attr:`versions_output`)."""

    program: str
    stack_name: str
    region: str
    name_output: str
    versions_output: str

    def name(self) -> str:
        """The group's name, read where it is used: ``Fn::GetStackOutput``, a weak reference."""
        return Fn.get_stack_output(self.stack_name, self.name_output, self.region)

    def versions_arn(self) -> str:
        """The ARN pattern of the group's versions, read the same way."""
        return Fn.get_stack_output(self.stack_name, self.versions_output, self.region)


class ModelRegistry(Construct):
    """A model package group (``AWS::SageMaker::ModelPackageGroup``) per training program.

    Guarantees:
    - each group is named ``<name_prefix>-<program, '_' as '-'>-<8 hex digits of the stack id>``,
      lower case, at most 63 characters (a longer one fails synth naming ``namePrefix``); the
      suffix is unique per creation of the stack (see lifecycle);
    - :attr:`groups` gives each program's group; its name and its versions' ARN pattern are
      plain outputs of this stack (``ModelPackageGroup<Id>``, ``ModelPackageVersions<Id>``),
      which another stack reads as weak references (``Fn::GetStackOutput``), never as exports.
      They are computed here, where ``Fn::Split`` may take the stack id: CloudFormation's
      ``Fn::Split`` takes no ``Fn::GetStackOutput`` (its list of allowed functions; cfn-lint
      E1022), so the reading stack never cuts them out of an ARN;
    - groups are kept when they leave the template or the stack is deleted, but not when the
      operation that created them rolls back (``RetainExceptOnCreate``), like the buckets' data:
      they hold the registered versions and their approval history.

    **Lifecycle.** A group's name is ``createOnlyProperties`` in its CloudFormation schema, and
    SageMaker refuses a second group with an existing name, so a fixed name would make a
    redeploy after ``cdk destroy`` fail on the retained group. The stack id's UUID changes only
    when the stack is created anew, hence: *update*: same groups; *a program added*: a new group;
    *a program removed*: its group is retained (with its versions); *destroy, then deploy*: new,
    empty groups beside the retained ones (the old versions stay readable and deployable in the
    console and with the SageMaker API, but ``smtrain models`` and the approval alerts follow the
    new groups); *failed first deploy*: the rollback deletes the empty groups. *A removed program
    added back* while its group is retained: the new resource has the retained group's name, so
    SageMaker refuses it and the update rolls back; delete the retained group (once its versions
    are deleted or no longer needed) or rename the program. The group's description is
    ``createOnlyProperties`` too (its CloudFormation schema), so it never changes. A group
    cannot be deleted while it holds versions (delete them first), which is one more reason not
    to delete groups with the stack.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 programs: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        creation_id = Fn.select(0, Fn.split("-", Fn.select(2, Fn.split("/", stack.stack_id))))
        self.groups: dict[str, ModelPackageGroup] = {}
        for program in programs:
            base = f"{name_prefix}-{program.replace('_', '-')}".lower()
            if len(base) + 1 + CREATION_ID_LENGTH > MAX_GROUP_NAME:
                from infra.settings import SettingsError

                raise SettingsError(
                    f"setting 'namePrefix' ({name_prefix!r}) with program {program!r} makes a "
                    f"model package group name of {len(base) + 1 + CREATION_ID_LENGTH} characters; "
                    f"SageMaker allows {MAX_GROUP_NAME}: shorten the prefix or the program's name")
            group = sagemaker.CfnModelPackageGroup(
                self, contract.output_id(program),
                model_package_group_name=Fn.join("-", [base, creation_id]),
                # createOnlyProperties, like the name: new text would replace the group, which
                # fails (the new group has the old one's name). Keep it as it is.
                model_package_group_description=f"Models of training program {program}, "
                                                f"registered by the {name_prefix} workflow",
            )
            group.apply_removal_policy(RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)
            output_id = contract.output_id(program)
            # Outputs named plainly (not after their construct path), so readers know the names.
            name_output = f"{contract.OUTPUT_MODEL_PACKAGE_GROUP}{output_id}"
            versions_output = f"ModelPackageVersions{output_id}"
            CfnOutput(self, name_output, value=group.model_package_group_name) \
                .override_logical_id(name_output)
            CfnOutput(self, versions_output, value=stack.format_arn(
                service="sagemaker", resource="model-package",
                resource_name=f"{group.model_package_group_name}/*")) \
                .override_logical_id(versions_output)
            self.groups[program] = ModelPackageGroup(
                program=program, stack_name=stack.stack_name, region=stack.region,
                name_output=name_output, versions_output=versions_output)
