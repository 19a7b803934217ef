"""Test settings: never reach a model hub, and keep converted models in one cache per session."""

import hashlib
import os
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["TQDM_DISABLE"] = "1"
# Tests never reach AWS: botocore must not probe the EC2 instance-metadata address either.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# One cache for the session (subprocesses inherit it): the GGUF is converted once, not per test.
os.environ.setdefault("LOCALNOVA_CACHE", tempfile.mkdtemp(prefix="localnova-test-cache-"))

# The moto server and AWS fixtures, for every Bedrock test.
pytest_plugins = ["bedrock_fixtures"]

# Twenty judge scores on the 0-10 scale: used by test_statistics.py and test_summary.py.
SCORES = np.array([7, 5, 8, 9, 3, 6, 7, 10, 4, 6, 8, 5, 7, 9, 2, 6, 7, 8, 5, 6], dtype=float)


def hub_error(kind: str, model_id: str):
    """The exception huggingface_hub raises for a gated or missing repository (a fake hub answer)."""
    import httpx2
    from huggingface_hub import errors

    response = httpx2.Response(
        403 if kind == "gated" else 404, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{model_id}")
    )
    error_class = errors.GatedRepoError if kind == "gated" else errors.RepositoryNotFoundError
    return error_class(f"{kind}: {model_id}", response=response)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The hub as huggingface_hub sees it, answered here: nothing cached, online, and
    `auth_check` answering from a table of repo id -> 'gated' | 'missing' (else allowed);
    `HfApi.model_info` names a commit for every repository but a missing one."""
    import huggingface_hub
    from huggingface_hub import constants

    answers: dict[str, str] = {}
    asked: list[str] = []

    def auth_check(repo_id, **kwargs):
        asked.append(repo_id)
        if repo_id in answers:
            raise hub_error(answers[repo_id], repo_id)

    def model_info(self, repo_id, revision=None, **kwargs):
        # A gated repository's metadata is public (only its files are gated), so the hub
        # names a commit for it; a missing one is not found.
        if answers.get(repo_id) == "missing":
            raise hub_error("missing", repo_id)
        return SimpleNamespace(sha=hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest())

    from localnova import models

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(models, "_REMOTE_COMMITS", {})
    return answers, asked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under LOCALNOVA_ENGINES_STRICT=1 (`make test-engines`) an engine test that skips fails:
    a missing engine must not pass CI as a skip (tests/engines/engine_support.py)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LOCALNOVA_ENGINES_STRICT") == "1" and report.skipped and item.get_closest_marker("engines") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"an engine test skipped under make test-engines, where none may: {reason}"
