"""How every ``smtrain`` command ends: its exit code, its one-line errors and the AWS session.

One owner for the mapping from what went wrong to what the user sees: each command module hands
its handler to :func:`run_handler`, which turns bad input into exit 2, an unreachable deployment
or AWS error into exit 4, an interrupt into exit 3, and prints one line for each. Only the
standard library is imported here; boto3 is imported by :func:`aws_session` when a command asks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smtrain.core.errors import InputError

#: Exit codes: 0 success; 1 the run failed; 2 bad usage or input (nothing started);
#: 3 the run timed out or was aborted; 4 AWS or the deployment could not be reached.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4

Handler = Callable[[argparse.Namespace], int]


class ResourceNotFound(RuntimeError):
    """A resource the command needs cannot be found; the message says what to do."""


def say(text: str = "") -> None:
    print(text, flush=True)


def fail(text: str) -> None:
    print(f"smtrain: error: {text}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    print(f"smtrain: warning: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class AwsOptions:
    """``--profile`` and ``--region`` of the command being run (None: not given)."""

    profile: str | None = None
    region: str | None = None


_aws_options = AwsOptions()


def use_aws_options(options: AwsOptions) -> None:
    """Set the ``--profile``/``--region`` that :func:`aws_session` applies, once per command
    (``smtrain.cli.main``), so that every command's session honours them."""
    global _aws_options
    _aws_options = options


def aws_message(error: Exception) -> str:
    """One line for a boto3/botocore error: what to configure, or what AWS answered."""
    name = type(error).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no AWS credentials found: pass --profile, configure a profile (aws configure), set "
                "AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if name == "NoRegionError":
        return ("no AWS region configured: pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), "
                "or set a region in your profile")
    if name == "EndpointConnectionError":
        return f"cannot reach AWS: {error}"
    return f"AWS answered: {error}"


def is_aws_error(error: BaseException) -> bool:
    return type(error).__module__.startswith(("botocore", "boto3"))


def aws_session(region: str | None = None) -> Any:
    """The boto3 session of every command: credentials and a region are checked up front.

    As the AWS CLI does, an option wins over the environment, which wins over the files (AWS CLI
    User Guide, "Configuration and credentials precedence",
    https://docs.aws.amazon.com/cli/latest/userguide/cli-chap-configure.html#configure-precedence):
    the profile is ``--profile``, else ``AWS_PROFILE`` (boto3 reads it), else ``default``; an
    explicit profile also wins over credentials in the environment (botocore drops its
    environment provider when a profile is given: ``botocore/credentials.py``,
    ``create_credential_resolver``). The region is ``--region``, else ``AWS_REGION`` (the CDK's
    and the newer SDKs' variable), ``AWS_DEFAULT_REGION`` or the profile's. ``region`` (a
    command's own, e.g. the app's) only spares the check that some region is configured.
    An unknown profile is one line naming the option or variable to change."""
    import boto3
    from botocore.exceptions import NoCredentialsError, NoRegionError, ProfileNotFound

    options = _aws_options
    try:
        session = boto3.Session(profile_name=options.profile,
                                region_name=options.region or os.environ.get("AWS_REGION") or None)
    except ProfileNotFound:
        files = "no such profile in your AWS config and credentials files"
        if options.profile is not None:
            raise ResourceNotFound(f"--profile {options.profile}: {files}; pass one they define "
                                   "(aws configure list-profiles)") from None
        raise ResourceNotFound(f"AWS_PROFILE={os.environ.get('AWS_PROFILE', '')}: {files}; pass "
                               "--profile with one they define, or unset AWS_PROFILE") from None
    if session.get_credentials() is None:
        raise NoCredentialsError()
    if (region or session.region_name) is None:
        raise NoRegionError()
    return session


def run_handler(handler: Handler, args: argparse.Namespace, *,
                interrupted: str = "interrupted",
                usage_errors: tuple[type[BaseException], ...] = (),
                environment_errors: Mapping[type[BaseException], str] | None = None) -> int:
    """Run ``handler`` and map what it raises to an exit code and one line on stderr.

    :class:`InputError` (and ``usage_errors``) -> 2; :class:`ResourceNotFound`, an AWS error or
    one of ``environment_errors`` (each with the prefix its message is shown with) -> 4; an
    interrupt -> 3 with ``interrupted``. Anything else is a bug and propagates."""
    try:
        return handler(args)
    except KeyboardInterrupt:
        fail(interrupted)
        return EXIT_ABORTED
    except Exception as error:
        if isinstance(error, (InputError, *usage_errors)):
            # A KeyError's text is its argument's repr: show the argument itself.
            fail(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))
            return EXIT_USAGE
        if isinstance(error, ResourceNotFound):
            fail(str(error))
            return EXIT_ENVIRONMENT
        for kind, prefix in (environment_errors or {}).items():
            if isinstance(error, kind):
                fail(f"{prefix}{error}")
                return EXIT_ENVIRONMENT
        if is_aws_error(error):
            fail(aws_message(error))
            return EXIT_ENVIRONMENT
        raise
