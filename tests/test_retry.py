"""The one retry policy: bounded, growing, jittered delays; a fixed number of tries; errors
that are not worth a retry raised at once. The sleep is injected, so nothing here waits."""

from __future__ import annotations

import random

import pytest

from localnova.retry import RetryPolicy, backoff_delay_s, retry_call


class Flaky:
    """Fails `failures` times with `error`, then returns "ok"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or TimeoutError("busy")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def _retryable(error: Exception) -> bool:
    return isinstance(error, TimeoutError)


def test_delays_are_bounded_by_a_doubling_ceiling_and_the_cap():
    rng = random.Random(0)
    for retry in range(12):
        ceiling = min(30.0, 1.0 * 2**retry)
        draws = [backoff_delay_s(retry, 1.0, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # full jitter reaches up to the ceiling
    means = [sum(RetryPolicy(base_delay_s=0.5, cap_delay_s=8.0).delay_s(r, rng) for _ in range(2000)) / 2000 for r in range(6)]
    assert means[0] < means[1] < means[2] < means[3] < means[4]  # growing until the cap ...
    assert means[5] == pytest.approx(4.0, rel=0.1)  # ... then uniform in [0, cap]


def test_retries_until_success_and_reports_each_retry():
    sleeps, retries = [], []
    flaky = Flaky(failures=3)
    result = retry_call(
        flaky,
        _retryable,
        RetryPolicy(max_attempts=5),
        sleep=sleeps.append,
        on_retry=lambda attempt, error, delay_s: retries.append((attempt, type(error).__name__, delay_s)),
    )
    assert result == "ok" and flaky.calls == 4
    assert [attempt for attempt, _, _ in retries] == [1, 2, 3]
    assert sleeps == [delay_s for _, _, delay_s in retries]
    assert all(0 <= delay_s <= min(30.0, 2**n) for n, delay_s in enumerate(sleeps))


def test_stops_after_max_attempts_with_the_last_error():
    sleeps = []
    flaky = Flaky(failures=100)
    with pytest.raises(TimeoutError, match="busy"):
        retry_call(flaky, _retryable, RetryPolicy(max_attempts=4), sleep=sleeps.append)
    assert flaky.calls == 4 and len(sleeps) == 3  # no sleep after the last try
    once = Flaky(failures=100)
    with pytest.raises(TimeoutError):
        retry_call(once, _retryable, RetryPolicy(max_attempts=1), sleep=sleeps.append)
    assert once.calls == 1 and len(sleeps) == 3


def test_non_retryable_errors_raise_at_once():
    sleeps = []
    flaky = Flaky(failures=1, error=ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        retry_call(flaky, _retryable, RetryPolicy(max_attempts=8), sleep=sleeps.append)
    assert flaky.calls == 1 and sleeps == []


def test_a_server_may_ask_for_a_longer_wait_but_not_beyond_the_cap():
    sleeps = []
    retry_call(
        Flaky(failures=2),
        _retryable,
        RetryPolicy(max_attempts=3, base_delay_s=0.01, cap_delay_s=5.0),
        sleep=sleeps.append,
        min_delay_s=lambda error: 60.0,
    )
    assert sleeps == [5.0, 5.0]
    sleeps.clear()
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01)
    retry_call(Flaky(failures=1), _retryable, policy, sleep=sleeps.append, min_delay_s=lambda error: 2.0)
    assert sleeps == [2.0]


def test_the_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=-1.0)
