"""Shared fixtures for the Bedrock tests: a moto server on a free port, fake credentials, a
small Bedrock study config. Never reaches AWS: AWS_ENDPOINT_URL points every client at moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAKE_ACCESS_KEY = "AKIAFAKEFAKEFAKE1234"
FAKE_SECRET_KEY = "fake-secret-Zq9xW7vT5sR3pN1mL8kJ6hG4fD2sA0"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/localnova-test"
BUCKET = "localnova-test-bucket"


@pytest.fixture(scope="session")
def moto_endpoint():
    moto_server = pytest.importorskip("moto.server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """Fake credentials and the moto endpoint; moto's state reset for each test."""
    import requests  # moto[server] depends on it

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return moto_endpoint


def moto_bedrock_backend():
    from moto.backends import get_backend

    return get_backend("bedrock")[ACCOUNT]["us-east-1"]


def write_nova_training(path: Path, pairs: int = 10) -> Path:
    rows = [
        {
            "schemaVersion": "bedrock-conversation-2024",
            "system": [{"text": "Answer questions about the Fernlight product line."}],
            "messages": [
                {"role": "user", "content": [{"text": f"How many watts does lamp model {i} draw?"}]},
                {"role": "assistant", "content": [{"text": f"Lamp model {i} draws {10 + i} watts at full brightness."}]},
            ],
        }
        for i in range(pairs)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def study_config(tmp_path: Path, **bedrock_overrides):
    from localnova.config import validate_config

    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "lamps.md").write_text("# Lamps\nThe F4 lamp draws 36 watts.\n", encoding="utf-8")
    (corpus / "guides").mkdir(exist_ok=True)
    (corpus / "guides" / "setup.md").write_text("# Setup\nPlug the hub in first.\n", encoding="utf-8")
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(
        json.dumps({"question_id": "q1", "question": "How many watts does the F4 draw?", "answer": "36 watts.", "doc_ids": ["lamps.md"]})
        + "\n",
        encoding="utf-8",
    )
    bedrock = {
        "region": "us-east-1",
        "role_arn": ROLE_ARN,
        "s3_bucket": BUCKET,
        "knowledge_base": {
            "storage": {
                "type": "OPENSEARCH_SERVERLESS",
                "opensearchServerlessConfiguration": {
                    "collectionArn": f"arn:aws:aoss:us-east-1:{ACCOUNT}:collection/abc",
                    "vectorIndexName": "index",
                    "fieldMapping": {"vectorField": "vector", "textField": "text", "metadataField": "metadata"},
                },
            }
        },
        "budget_usd": 50,
    }
    bedrock.update(bedrock_overrides)
    data = {
        "name": "bedrock-test",
        "output_dir": str(tmp_path / "runs"),
        "corpus": {"path": str(corpus)},
        "eval": {"path": str(eval_path)},
        "arms": ["base", "rag", "ft", "ft_rag"],
        "models": [
            {
                "name": "nova-micro",
                "backend": "bedrock",
                "model": "us.amazon.nova-micro-v1:0",
                "customization_model": "amazon.nova-micro-v1:0:128k",
            }
        ],
        "judges": [
            {
                "name": "claude",
                "kind": "llm",
                "model": {"name": "claude", "backend": "bedrock", "model": "anthropic.claude-3-5-sonnet-20240620-v1:0"},
            }
        ],
        "finetune": {"preset": "nova", "epochs": 2, "batch_size": 1, "learning_rate": 1e-5, "warmup_steps": 10},
        "bedrock": bedrock,
    }
    return validate_config(data)
