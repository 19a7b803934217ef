"""AWS clients, the credentials check and our bounded retry with jitter.

botocore's adaptive retry mode already retries throttled calls a few times; long studies
still hit sustained throttling (a provisioned model warming up, a busy account), so calls
that change or read resources go through `call_with_backoff`, which waits longer, with
jitter, up to a fixed number of tries (the one policy of localnova.retry).
"""

from __future__ import annotations

import logging
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
BOTOCORE_MAX_ATTEMPTS = 5


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_retryable(error: Exception) -> bool:
    """Whether an AWS error means "try again later" (botocore's ClientError carries the code)."""
    return error_code(error) in RETRYABLE_ERROR_CODES


def call_with_backoff(
    call: Callable[..., Any],
    *args: Any,
    max_tries: int = 8,
    base_delay_s: float = 1.0,
    cap_delay_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> Any:
    """Call `call(*args, **kwargs)`, retrying throttling and unavailability with the project's
    retry policy (localnova.retry); any other error, or the last retryable one, is raised."""
    name = getattr(call, "__name__", "call")

    def log_retry(attempt: int, error: Exception, delay_s: float) -> None:
        log.info("%s: %s, retrying in %.1f s (try %d of %d)", name, error_code(error), delay_s, attempt + 1, max_tries)

    policy = RetryPolicy(max_attempts=max_tries, base_delay_s=base_delay_s, cap_delay_s=cap_delay_s)
    return retry_call(lambda: call(*args, **kwargs), is_retryable, policy, sleep=sleep, on_retry=log_retry)


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


def make_client(service: str, region: str, max_attempts: int = BOTOCORE_MAX_ATTEMPTS) -> Any:
    """A boto3 client with botocore's adaptive retry mode; with `max_attempts=1`, botocore's
    standard mode with a single attempt: no retry and no client-side rate limiter inside the
    call, for callers that time each attempt and retry themselves (the Converse backend).
    AWS_ENDPOINT_URL (as the tests set for moto) is honoured by botocore itself."""
    require("boto3", "the Bedrock path")
    import boto3
    from botocore.config import Config

    mode = "adaptive" if max_attempts > 1 else "standard"
    config = Config(region_name=region, retries={"mode": mode, "total_max_attempts": max_attempts})
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


def wait_until(
    describe: Callable[[], str],
    done: set[str],
    failed: set[str],
    what: str,
    poll_s: float = 30.0,
    max_poll_s: float = 300.0,
    timeout_s: float = 6 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> str:
    """Poll `describe()` (which returns a status string) until it is in `done` (returned) or
    `failed` (RuntimeError); the wait between polls grows to `max_poll_s`. A tqdm bar shows
    the status and the time waited."""
    waited_s = 0.0
    interval_s = poll_s
    bar = None
    if progress:
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
                raise RuntimeError(f"{what}: ended as {status}")
            if waited_s >= timeout_s:
                raise TimeoutError(f"{what}: still {status} after {waited_s / 3600:.1f} h")
            sleep(interval_s)
            waited_s += interval_s
            interval_s = min(max_poll_s, interval_s * 1.5)
    finally:
        if bar is not None:
            bar.close()
