"""AWS clients, the credentials check, our one retry layer, waiting, and AWS errors as one line.

Every client makes one attempt per call (botocore's standard mode with a single attempt: no
retry and no rate limiter inside the call); `call_with_backoff` is the only place a call is
tried again, with the project's policy (localnova.retry). Two layers (ours around botocore's)
would multiply the tries, 8 x 5 for one control-plane call, and hide how many were made.

Every wait goes through `pause`, whose sleep (SLEEP) tests replace to move a fake clock.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from localnova.errors import UserError
from localnova.optional import require
from localnova.retry import RetryPolicy, retry_call

log = logging.getLogger(__name__)

# Error codes that mean "try again later", as the Bedrock APIs spell them.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "ModelNotReadyException",
        # the model timed out or erred on this request; AWS's Converse page says to retry
        "ModelTimeoutException",
        "ModelErrorException",
        "InternalServerException",
        "RequestTimeout",
    }
)
CONTROL_PLANE_TRIES = 8


# Every wait of the Bedrock path (polling, backoff) goes through `pause`, which calls this;
# tests replace it to move a fake clock instead of sleeping.
SLEEP: Callable[[float], None] = time.sleep


def pause(seconds: float) -> None:
    SLEEP(seconds)


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "") or error)


def is_aws_error(error: BaseException) -> bool:
    """An answer or failure of AWS or of the way to it (ClientError, connection and read
    errors), as opposed to a bug in this tool."""
    return bool(error_code(error)) or type(error).__module__.startswith(("botocore", "urllib3"))


def aws_error_line(error: BaseException) -> str:
    """One line for an AWS error: the operation, the code and AWS's own message."""
    code = error_code(error)
    operation = getattr(error, "operation_name", "") or "a call"
    if code:
        return f"AWS refused {operation} ({code}): {' '.join(error_message(error).split())}"
    return f"AWS could not be reached ({type(error).__name__}: {' '.join(str(error).split())})"


def is_retryable(error: Exception) -> bool:
    """Whether an AWS error means "try again later" (botocore's ClientError carries the code)."""
    return error_code(error) in RETRYABLE_ERROR_CODES


def call_with_backoff(
    call: Callable[..., Any],
    *args: Any,
    max_tries: int = CONTROL_PLANE_TRIES,
    base_delay_s: float = 1.0,
    cap_delay_s: float = 30.0,
    sleep: Callable[[float], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Call `call(*args, **kwargs)`, retrying throttling and unavailability with the project's
    retry policy (localnova.retry); any other error, or the last retryable one, is raised."""
    name = getattr(call, "__name__", "call")

    def log_retry(attempt: int, error: Exception, delay_s: float) -> None:
        log.info("%s: %s, retrying in %.1f s (try %d of %d)", name, error_code(error), delay_s, attempt + 1, max_tries)

    policy = RetryPolicy(max_attempts=max_tries, base_delay_s=base_delay_s, cap_delay_s=cap_delay_s)
    return retry_call(lambda: call(*args, **kwargs), is_retryable, policy, sleep=sleep or pause, on_retry=log_retry)


def require_credentials(region: str) -> None:
    """Raise a UserError when boto3 finds no AWS credentials (env, profile, SSO, instance role).

    Only the presence of credentials is checked; nothing about them is printed or logged."""
    require("boto3", "the Bedrock path")
    import boto3

    if boto3.session.Session(region_name=region).get_credentials() is None:
        raise UserError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run `localnova run CONFIG --dry-run`, which needs none)"
        )


def make_client(service: str, region: str) -> Any:
    """A boto3 client that makes one attempt per call (botocore's standard mode, one attempt,
    no client-side rate limiter): the caller retries, once, as it decides. AWS_ENDPOINT_URL
    (as the tests set for moto) is honoured by botocore itself."""
    require("boto3", "the Bedrock path")
    import boto3
    from botocore.config import Config

    config = Config(region_name=region, retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.session.Session(region_name=region).client(service, config=config)


class AwsClients:
    """The clients one study needs, made on first use; tests pass their own (moto or Stubber)."""

    def __init__(self, region: str, clients: dict[str, Any] | None = None, check_credentials: bool = True):
        self.region = region
        self._clients: dict[str, Any] = dict(clients or {})
        self._checked = not check_credentials

    def get(self, service: str) -> Any:
        if service not in self._clients:
            if not self._checked:
                require_credentials(self.region)
                self._checked = True
            self._clients[service] = make_client(service, self.region)
        return self._clients[service]

    @property
    def bedrock(self) -> Any:
        return self.get("bedrock")

    @property
    def agent(self) -> Any:
        return self.get("bedrock-agent")

    @property
    def agent_runtime(self) -> Any:
        return self.get("bedrock-agent-runtime")

    @property
    def s3(self) -> Any:
        return self.get("s3")


class WaitFailed(UserError):
    """A resource ended in a failed state, or never became ready in the time allowed."""


def wait_until(
    describe: Callable[[], str],
    done: set[str],
    failed: set[str],
    what: str,
    poll_s: float = 30.0,
    max_poll_s: float = 300.0,
    timeout_s: float = 6 * 3600.0,
    sleep: Callable[[float], None] | None = None,
    progress: bool = True,
) -> str:
    """Poll `describe()` (which returns a status string) until it is in `done` (returned) or
    `failed` (WaitFailed), or `timeout_s` of waiting has passed (WaitFailed too); the wait
    between polls grows to `max_poll_s`. On a terminal a tqdm bar shows the status and the time
    waited."""
    sleep = sleep or pause
    waited_s = 0.0
    interval_s = poll_s
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=what, unit="poll", leave=False)
    try:
        while True:
            status = call_with_backoff(describe, sleep=sleep)
            if bar is not None:
                bar.set_postfix_str(f"{status}, {waited_s / 60:.0f} min")
                bar.update(1)
            if status in done:
                return status
            if status in failed:
                raise WaitFailed(f"{what}: ended as {status}")
            if waited_s >= timeout_s:
                raise WaitFailed(f"{what}: still {status} after {waited_s / 3600:.1f} h of waiting")
            sleep(interval_s)
            waited_s += interval_s
            interval_s = min(max_poll_s, interval_s * 1.5)
    finally:
        if bar is not None:
            bar.close()
