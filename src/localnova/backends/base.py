"""The one interface every text-producing backend implements.

Answer models and judges are both backends, so any judge can score any path's answers, and a
Bedrock run and a local run write the same records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from localnova.types import ChatRequest, GenerationResult


class Backend(ABC):
    """A batch of chat requests in, one GenerationResult per request out, in order."""

    #: Everything about the model that changes its output (backend name, model id and
    #: revision or file hash, adapter hash). It goes into every cache key of the store.
    identity: dict[str, str]

    #: Whether GenerationParams.top_logprobs is honoured.
    supports_logprobs: bool = False

    @abstractmethod
    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        """Answer every request; the results are in the order of the requests."""

    def generate_each(self, requests: list[ChatRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Each request's index and result, as soon as it is ready; the store commits each one
        as it comes. A backend that answers a batch at once yields them all when it is done; a
        paid backend answering call by call (Bedrock) yields each as its call returns, so an
        answer paid for is never lost to an interruption of the batch."""
        yield from enumerate(self.generate(requests))

    def load(self) -> None:  # noqa: B027 - a default: a backend with nothing to load
        """Load the model now rather than on the first generate() (a server wants to be ready)."""

    def can_force_first_token(self, messages: list[dict[str, str]], text: str) -> bool:
        """Whether GenerationParams.first_token=`text` after `messages` (ending in an assistant
        prefix) computes what a request with `text` appended to that prefix would: the logprob
        judge then reads the score position and the token after a "1" in one request, not two."""
        return False

    def base_model_view(self) -> Backend | None:
        """A backend answering as this one's base model (no adapter) from what this one has
        loaded, or None where there is none (then the caller makes one): the latency probe
        times the base arms beside the ft arms without a second copy of the model."""
        return None

    def requests_per_call(self, batch_size: int) -> int:
        """How many requests one generate() call should be given when the model's batch size is
        `batch_size`: more than one batch for a backend that refills the slots of finished rows
        (the caller commits results after each call)."""
        return batch_size

    def close(self) -> None:  # noqa: B027 - a default: a backend that holds nothing needs no close
        """Release memory, threads or connections."""
