"""The budget of a paid run: the check of the estimate, and the live guard that sees every cost.

`SpendGuard` holds what the run has spent and stops a step that would cross budget_usd. It
sees every cost as a sum of three parts, each re-read at every check:
- tokens of the calls that answered (answers, judges, retrieve embeddings), added as each one
  returns, seeded with what the store already holds from earlier runs;
- calls in flight, reserved at their largest cost (the prompt, estimated, plus max_tokens of
  output) from before they are sent until they answer; a call whose answer never comes (Ctrl-C,
  a lost connection) keeps its reservation, handed to `on_unstored` (the state file) so this
  run and the next both count it; so are calls whose cost the store never holds (retrieve);
- resources, read from the state file by a function the study passes (`resource_spend`):
  training from the file actually uploaded, storage, Knowledge Base ingestion, and hosting hours
  from the state's timestamps up to this moment, so an hour that starts mid-run is counted at
  the next check, not when a resource next changes.
A model without a price is an error here, never $0: the estimate refuses it before the run.
Plain Python: no boto3, no model code.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from localnova.errors import UserError
from localnova.prices import PriceBook, load_prices, price_key


class TotalledEstimate(Protocol):
    def total(self, hosting: str) -> float: ...


def check_budget(estimate: TotalledEstimate | float, budget_usd: float, hosting: str = "on_demand") -> None:
    """A UserError when the estimate for the chosen hosting exceeds the budget."""
    total = float(estimate) if isinstance(estimate, int | float) else estimate.total(hosting)
    if total > budget_usd:
        raise UserError(
            f"bedrock.budget_usd: the estimate ${total:,.2f} (hosting {hosting}) exceeds the budget ${budget_usd:,.2f}; "
            "raise the budget or shrink the study"
        )


class BudgetExceeded(UserError):
    """The next paid step would take the run past bedrock.budget_usd."""


class SpendGuard:
    """The run's spending so far (see the module's docstring). Thread-safe: every converse
    thread reserves and settles through it. `active_spend_guard()` is the guard of the run in
    progress, if any."""

    def __init__(
        self,
        budget_usd: float,
        spent_usd: float = 0.0,
        prices: PriceBook | None = None,
        resource_spend: Callable[[], float] | None = None,
        on_unstored: Callable[[str, float], None] | None = None,
    ):
        self.budget_usd = budget_usd
        self.token_usd = spent_usd
        self.prices = prices
        self.price_ids: dict[str, str | None] = {}  # model id -> price id; None: paid by the hour
        self._resource_spend = resource_spend or (lambda: 0.0)
        self._on_unstored = on_unstored
        self._reserved: dict[int, float] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.RLock()

    @property
    def resource_usd(self) -> float:
        return float(self._resource_spend())

    @property
    def reserved_usd(self) -> float:
        with self._lock:
            return sum(self._reserved.values())

    @property
    def spent_usd(self) -> float:
        """Everything counted at this moment: answered calls, calls in flight, resources."""
        with self._lock:
            return self.token_usd + sum(self._reserved.values()) + self.resource_usd

    def before(self, step: str, estimated_cost_usd: float) -> None:
        """Stop (BudgetExceeded) before `step` if what is spent plus its cost crosses the budget."""
        with self._lock:
            spent = self.spent_usd
        if spent + estimated_cost_usd > self.budget_usd:
            raise BudgetExceeded(
                f"bedrock.budget_usd: stopping before {step}: ${spent:,.2f} spent + ${estimated_cost_usd:,.2f} estimated "
                f"exceeds the budget ${self.budget_usd:,.2f}; a rerun with a larger budget resumes where this stopped"
            )

    def reserve(self, step: str, largest_cost_usd: float) -> int:
        """Check the budget and hold `largest_cost_usd` until the call settles; returns the
        reservation's number."""
        with self._lock:
            self.before(step, largest_cost_usd)
            number = next(self._numbers)
            self._reserved[number] = largest_cost_usd
            return number

    def settle(self, reservation: int, cost_usd: float) -> None:
        """The call answered: its true cost replaces the reservation."""
        with self._lock:
            self._reserved.pop(reservation, None)
            self.token_usd += cost_usd

    def release(self, reservation: int) -> None:
        """AWS refused the call: it made nothing and billed nothing."""
        with self._lock:
            self._reserved.pop(reservation, None)

    def lost(self, reservation: int, what: str) -> None:
        """The call's answer never came: it may have been billed, so its reservation stays
        counted, here and in the next run."""
        with self._lock:
            cost = self._reserved.get(reservation, 0.0)
        self.settle_unstored(reservation, what, cost)

    def settle_unstored(self, reservation: int, what: str, cost_usd: float) -> None:
        """A call whose cost the results store will not hold (a retrieve, a lost answer): its
        cost goes to `on_unstored` (which the resource part re-reads) before the reservation
        is dropped, so it is never uncounted, nor counted twice."""
        if self._on_unstored is not None:
            if cost_usd:
                self._on_unstored(what, cost_usd)
            with self._lock:
                self._reserved.pop(reservation, None)
        else:
            self.settle(reservation, cost_usd)

    def add(self, cost_usd: float) -> None:
        with self._lock:
            self.token_usd += cost_usd

    def token_cost(self, model_id: str, input_tokens: int, output_tokens: int) -> float:
        """What one call costs at the price file's rate for the route it takes (0 for a model
        paid by the hour). A model without a price is a UserError: the estimate refuses such a
        model before the run, so reaching one here means the run would spend blind."""
        price_id = self.price_ids.get(model_id, model_id)
        if price_id is None:
            return 0.0
        self.prices = self.prices or load_prices()
        entry = self.prices.token_prices(price_id)
        if entry is None:
            raise UserError(f"{model_id}: no price for {price_key(price_id)} in {self.prices.path}; add it under bedrock.prices")
        return input_tokens / 1000 * entry["input_per_1k"] + output_tokens / 1000 * entry["output_per_1k"]


_ACTIVE_GUARD: list[SpendGuard] = []


def active_spend_guard() -> SpendGuard | None:
    return _ACTIVE_GUARD[-1] if _ACTIVE_GUARD else None


@contextmanager
def spend_guarded(guard: SpendGuard) -> Iterator[SpendGuard]:
    """Make `guard` the active one while the block runs (the paid backends report to it)."""
    _ACTIVE_GUARD.append(guard)
    try:
        yield guard
    finally:
        _ACTIVE_GUARD.remove(guard)
