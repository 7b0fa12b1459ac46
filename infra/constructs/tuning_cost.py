"""What a tuning run's training jobs cost in all, in the run's output (``report.cost``).

A tuning job's description gives no billable time (DescribeHyperParameterTuningJob's
``ConsumedResources.RuntimeInSeconds`` is the tuning job's wall-clock time), so the states here
list its training jobs (ListTrainingJobsForHyperParameterTuningJob, 100 a page, the API's
maximum), describe each (DescribeTrainingJob: ``BillableTimeInSeconds``, ``ResourceConfig``),
reckon each with :data:`smtrain.core.prices.JOB_COST_FUNCTION` and fold the page into the total
with :data:`~smtrain.core.prices.TUNING_COST_FUNCTION`: the JSONata texts the CLI evaluates too.
The total lives in the execution's variable ``tuningCost`` between pages.

Nothing here can fail the run: a training job that cannot be described counts as of unknown
cost, and a list that fails leaves the total unknown with the error's name (``usd`` null,
``error``), as :class:`~infra.constructs.training_state_machine.TrainingStateMachine` does for a
training run's cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.sdk_call_retry import retry_sagemaker_call, sagemaker_call_retrier
from smtrain.core import contract, prices

#: ListTrainingJobsForHyperParameterTuningJob's largest page (botocore's model: MaxResults 1-100).
PAGE_SIZE = 100
#: Training jobs described at once: a tuning job's trials end before this runs, so this only
#: bounds the burst of DescribeTrainingJob calls (retried when throttled).
DESCRIBE_CONCURRENCY = 10
#: The execution variables the states use (Step Functions developer guide, "Passing data
#: between states with variables").
TOTAL_VARIABLE = "tuningCost"
NAMES_VARIABLE = "tuningTrialNames"
TOKEN_VARIABLE = "tuningTrialsNextToken"


def report_with_cost(cost: str) -> str:
    """A JSONata state's Output: its input, with ``cost`` (a JSONata expression) as the report's
    ``cost`` (a training run's ReckonCost and the states here)."""
    return ("{% $merge([$states.input, {'report': $merge([$states.input.report, "
            f"{{'{contract.OUTPUT_COST}': {cost}}}])}}]) %}}")


def prices_literal(run_prices: Mapping[str, float]) -> str:
    """The prices fixed at synth as a JSONata object literal (JSON is JSONata)."""
    return json.dumps(dict(run_prices), sort_keys=True)


class TuningCost(Construct):
    """The states that put a finished tuning job's total cost in ``report.cost``.

    Reads ``report.tuningJobName`` of its input; passes the input on with ``report.cost`` set
    to ``{usd, trainingJobs, trainingJobsOfUnknownCost}`` (or ``{usd: null, error}``).
    ``run_prices`` are the on-demand USD prices per hour by instance type, fixed at synth.
    :attr:`policy_statements`: listing the training jobs of the stack's tuning jobs
    (``<name_prefix>-*``) and describing theirs (SageMaker names them after their tuning job).
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 run_prices: Mapping[str, float], after: sfn.IChainable) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        jsonata = sfn.QueryLanguage.JSONATA
        unknown = report_with_cost("{'usd': null, 'error': $states.errorOutput.Error}")
        after_id = after.start_state.state_id
        def list_page(construct_id: str, *, first: bool) -> sfn.CustomState:
            """One page of the tuning job's training jobs: the first, or the one after the
            last page's token. Arguments stay an object (cfn-lint's schema of a state takes
            no other), so the first page and the next are two states."""
            arguments: dict[str, object] = {
                "HyperParameterTuningJobName": "{% $states.input.report.tuningJobName %}",
                "MaxResults": PAGE_SIZE}
            assign: dict[str, object] = {
                # [..]: an array even when the page holds one job.
                NAMES_VARIABLE: "{% [$states.result.TrainingJobSummaries.TrainingJobName] %}",
                TOKEN_VARIABLE: "{% $exists($states.result.NextToken) ? $states.result.NextToken : null %}",
            }
            if first:
                # As JSONata (JSON is JSONata): CDK would drop a literal null from the object.
                assign[TOTAL_VARIABLE] = f"{{% {json.dumps(prices.NO_TUNING_COST)} %}}"
            else:
                arguments["NextToken"] = f"{{% ${TOKEN_VARIABLE} %}}"
            state = sfn.CustomState(self, construct_id, state_json={
                "Type": "Task", "QueryLanguage": "JSONata",
                "Resource": "arn:aws:states:::aws-sdk:sagemaker:listTrainingJobsForHyperParameterTuningJob",
                "Arguments": arguments, "Assign": assign, "Output": "{% $states.input %}",
                "Catch": [{"ErrorEquals": ["States.ALL"], "Output": unknown, "Next": after_id}],
            })
            retry_sagemaker_call(state)
            return state

        first_page = list_page("ListTuningTrainingJobs", first=True)
        next_page = list_page("ListMoreTuningTrainingJobs", first=False)
        price_table = prices_literal(run_prices)
        describe_each = sfn.CustomState(self, "ReckonTuningTrainingJobs", state_json={
            "Type": "Map", "QueryLanguage": "JSONata",
            "Items": f"{{% ${NAMES_VARIABLE} %}}",
            "MaxConcurrency": DESCRIBE_CONCURRENCY,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "ReckonTuningTrainingJob",
                "States": {
                    "ReckonTuningTrainingJob": {
                        "Type": "Task", "QueryLanguage": "JSONata",
                        "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                        "Arguments": {"TrainingJobName": "{% $states.input %}"},
                        "Output": f"{{% ({prices.JOB_COST_FUNCTION})($states.result, {price_table}) %}}",
                        "Retry": [sagemaker_call_retrier()],
                        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "TuningTrainingJobCostUnknown",
                                   "Output": "{% {'usd': null, 'error': $states.errorOutput.Error} %}"}],
                        "End": True,
                    },
                    "TuningTrainingJobCostUnknown": {"Type": "Pass", "QueryLanguage": "JSONata",
                                                     "End": True},
                },
            },
            "Assign": {TOTAL_VARIABLE: f"{{% ({prices.TUNING_COST_FUNCTION})(${TOTAL_VARIABLE}, $states.result) %}}"},
            "Output": "{% $states.input %}",
            "Catch": [{"ErrorEquals": ["States.ALL"], "Output": unknown, "Next": after_id}],
        })
        report = sfn.Pass(self, "ReportTuningCost", query_language=jsonata,
                          outputs=report_with_cost(f"${TOTAL_VARIABLE}"))
        more = sfn.Choice(self, "MoreTuningTrainingJobs", query_language=jsonata)
        more.when(sfn.Condition.jsonata(f"{{% ${TOKEN_VARIABLE} != null %}}"), next_page)
        more.otherwise(report)
        first_page.next(describe_each).next(more)
        next_page.next(describe_each)
        report.next(after)
        self.start: sfn.State = first_page
        self.policy_statements: list[iam.PolicyStatement] = [
            iam.PolicyStatement(
                actions=["sagemaker:ListTrainingJobsForHyperParameterTuningJob"],
                resources=[stack.format_arn(service="sagemaker", resource="hyper-parameter-tuning-job",
                                            resource_name=f"{name_prefix}-*")]),
            iam.PolicyStatement(
                actions=["sagemaker:DescribeTrainingJob"],
                resources=[stack.format_arn(service="sagemaker", resource="training-job",
                                            resource_name=f"{name_prefix}-*")]),
        ]
