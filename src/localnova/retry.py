"""One retry policy for every remote call: exponential backoff with full jitter, bounded.

Retry n (counted from 0) waits a random time in [0, min(cap, base x 2^n)]. Full jitter spreads
the retries of many threads that hit one rate limit at the same moment, instead of sending
them back together (AWS Architecture Blog, "Exponential Backoff And Jitter"). After
`max_attempts` tries, the first included, the last error is raised; an error the caller does
not call retryable is raised at once.

Standard library only; the sleep and the random source are arguments, so tests never wait.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries and how long between them."""

    max_attempts: int = 8  # tries, the first included
    base_delay_s: float = 1.0  # the first retry waits up to this long
    cap_delay_s: float = 30.0  # no single wait is longer

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.cap_delay_s < 0:
            raise ValueError("delays must not be negative")

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry` (0 for the first retry)."""
        return backoff_delay_s(retry, self.base_delay_s, self.cap_delay_s, rng)


def backoff_delay_s(retry: int, base_s: float = 1.0, cap_s: float = 30.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: a random wait in [0, min(cap, base x 2^retry)]."""
    upper = min(cap_s, base_s * (2**retry))
    return (rng or random).uniform(0.0, upper)


def retry_call(
    call: Callable[[], T],
    is_retryable: Callable[[Exception], bool],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    min_delay_s: Callable[[Exception], float | None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call `call()` until it returns, at most `policy.max_attempts` times.

    An exception that `is_retryable` rejects is raised at once, and so is the last retryable
    one. Before each retry, `on_retry(attempt, error, delay_s)` is told which try failed
    (1-based) and how long the wait is (for logs and counters). `min_delay_s(error)` may ask
    for a longer wait (a server's Retry-After); the cap still bounds it.
    """
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == policy.max_attempts or not is_retryable(error):
                raise
            delay_s = policy.delay_s(attempt - 1, rng)
            asked_s = min_delay_s(error) if min_delay_s is not None else None
            if asked_s is not None:
                delay_s = max(delay_s, min(asked_s, policy.cap_delay_s))
            if on_retry is not None:
                on_retry(attempt, error, delay_s)
            sleep(delay_s)
    raise AssertionError("unreachable")
