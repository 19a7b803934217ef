"""Test settings: never reach a model hub, and keep converted models in one cache per session."""

import os
import tempfile
from pathlib import Path

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

REPO = Path(__file__).resolve().parents[1]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
