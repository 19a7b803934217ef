"""Test settings: never reach a model hub, and keep converted models in one cache per session."""

import os
import tempfile

import numpy as np

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
