"""The team queue: AWS Batch for SageMaker Training (a service environment and its job queues)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_batch as batch
from constructs import Construct

from smtrain.core import contract

#: How long a share's past use counts against it under fair share (CfnSchedulingPolicy
#: ShareDecaySeconds, 0-604800): an hour, so a team that trained all morning waits behind one
#: that did not, and is even again by the afternoon.
SHARE_DECAY_SECONDS = 3600


class TrainingQueue(Construct):
    """A Batch service environment of type SageMaker training with ``max_instances`` of
    capacity (``NUM_INSTANCES``), and one job queue per priority of
    :data:`~smtrain.core.contract.QUEUE_PRIORITIES` feeding it (``<prefix>-high`` is evaluated
    before ``<prefix>-normal``). With ``fair_share`` (default off: each queue is first in, first
    out) both queues share one fair-share scheduling policy, and every job must name its share
    (the state machine sends the input's ``team``, default the program).

    Batch creates its service-linked role (``AWSServiceRoleForAWSBatchWithSagemaker``) with the
    first service environment of the account (user guide, "Using service-linked roles for AWS
    Batch with SageMaker AI"); it is what creates, watches and stops the SageMaker jobs.

    :attr:`queue_arns` maps each priority to its queue's ARN, built from the queue's name so the
    workflow stack can name it without a cross-stack export."""

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 max_instances: int, fair_share: bool = False,
                 tags: dict[str, str] | None = None) -> None:
        super().__init__(scope, construct_id)
        self.environment = batch.CfnServiceEnvironment(
            self, "Environment",
            service_environment_name=contract.service_environment_name(name_prefix),
            service_environment_type=contract.SERVICE_JOB_TYPE,
            capacity_limits=[batch.CfnServiceEnvironment.CapacityLimitProperty(
                capacity_unit="NUM_INSTANCES", max_capacity=max_instances)],
            tags=tags,
        )
        self.scheduling_policy: batch.CfnSchedulingPolicy | None = None
        if fair_share:
            self.scheduling_policy = batch.CfnSchedulingPolicy(
                self, "FairShare", name=f"{name_prefix}-fair-share",
                fairshare_policy=batch.CfnSchedulingPolicy.FairsharePolicyProperty(
                    share_decay_seconds=SHARE_DECAY_SECONDS, compute_reservation=0),
                tags=tags,
            )
        self.queues: dict[str, batch.CfnJobQueue] = {}
        for priority, order in contract.QUEUE_PRIORITIES.items():
            self.queues[priority] = batch.CfnJobQueue(
                self, f"{priority.capitalize()}Queue",
                job_queue_name=contract.job_queue_name(name_prefix, priority, fair_share=fair_share),
                job_queue_type=contract.SERVICE_JOB_TYPE,
                priority=order,
                service_environment_order=[batch.CfnJobQueue.ServiceEnvironmentOrderProperty(
                    order=1, service_environment=self.environment.attr_service_environment_arn)],
                scheduling_policy_arn=(self.scheduling_policy.attr_arn
                                       if self.scheduling_policy is not None else None),
                tags=tags,
            )
        self.queue_arns = queue_arns(Stack.of(self), name_prefix, fair_share=fair_share)


def queue_arns(stack: Stack, name_prefix: str, *, fair_share: bool) -> dict[str, str]:
    """Each priority's job queue ARN (``arn:<partition>:batch:<region>:<account>:job-queue/<name>``,
    Service Authorization Reference, AWS Batch resource types)."""
    return {priority: stack.format_arn(service="batch", resource="job-queue",
                                       resource_name=contract.job_queue_name(
                                           name_prefix, priority, fair_share=fair_share))
            for priority in contract.QUEUE_PRIORITIES}
