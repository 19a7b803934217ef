"""Shared fixtures for the Bedrock tests: a moto server on a free port, fake credentials, a
small Bedrock study config, and one check of every request against botocore's service model.
Never reaches AWS: AWS_ENDPOINT_URL points every client at moto.

`request_problems` is the one request check: botocore's own `validate_parameters` (names,
types, required members, minimum lengths) plus what botocore leaves to the server: each
string's pattern, maximum lengths and enums, and integer ranges. The autouse fixture
`validate_every_request` runs it on every call any botocore client makes in any test (moto,
Stubber or a local stand-in alike), and fails the call, so a malformed request fails the test
that makes it. Calls are also recorded, for tests that look at them.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

FAKE_ACCESS_KEY = "AKIAFAKEFAKEFAKE1234"
FAKE_SECRET_KEY = "fake-secret-Zq9xW7vT5sR3pN1mL8kJ6hG4fD2sA0"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/localnova-test"
BUCKET = "localnova-test-bucket"


def _pattern(pattern: str) -> str:
    """A botocore pattern as the service means it. bedrock-agent's ListTagsForResource pattern
    (botocore 1.44) spells the account id `/d{12}` for `\\d{12}`, which no ARN matches; the
    service takes Knowledge Base ARNs there (its own documentation's example is one)."""
    return pattern.replace(":/d{12}:", r":\d{12}:")


def _shape_problems(shape: Any, value: Any, where: str) -> list[str]:
    """Pattern, length, enum and range problems of `value` against a botocore shape."""
    problems = []
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member_value in value.items():
            if name in shape.members:
                problems += _shape_problems(shape.members[name], member_value, f"{where}.{name}")
    elif kind == "list" and isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problems += _shape_problems(shape.member, item, f"{where}[{index}]")
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += _shape_problems(shape.key, key, f"{where} key {key!r}")
            problems += _shape_problems(shape.value, item, f"{where}[{key!r}]")
    if kind == "string" and isinstance(value, str):
        if "pattern" in meta and re.fullmatch(_pattern(meta["pattern"]), value) is None:
            problems.append(f"{where}: {value!r} does not match the pattern {meta['pattern']!r}")
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            problems.append(f"{where}: {value!r} is not one of {enum}")
    if kind in ("string", "list", "map", "blob") and hasattr(value, "__len__") and "max" in meta and len(value) > meta["max"]:
        problems.append(f"{where}: length {len(value)} over the maximum {meta['max']}")
    if kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "min" in meta and value < meta["min"]:
            problems.append(f"{where}: {value} under the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where}: {value} over the maximum {meta['max']}")
    return problems


def request_problems(service: str | Any, operation_name: str, params: dict[str, Any]) -> list[str]:
    """Everything wrong with one request, per botocore's model of `service` (a name or a
    ServiceModel); an empty list means well-formed."""
    import botocore.session
    from botocore.validate import ParamValidator

    service_model = botocore.session.get_session().get_service_model(service) if isinstance(service, str) else service
    operation = service_model.operation_model(operation_name)
    report = ParamValidator().validate(params, operation.input_shape)
    problems = [report.generate_report()] if report.has_errors() else []
    return problems + _shape_problems(operation.input_shape, params, operation_name)


# Every request botocore clients made in the current test: (service, operation, params).
RECORDED_REQUESTS: list[tuple[str, str, dict[str, Any]]] = []


@pytest.fixture(autouse=True)
def validate_every_request(monkeypatch):
    """Check every botocore call of the test against the service model before it goes out."""
    try:
        import botocore.client
    except ImportError:
        yield RECORDED_REQUESTS
        return
    original = botocore.client.BaseClient._make_api_call

    def checked(client, operation_name, api_params):
        service_model = client.meta.service_model
        problems = request_problems(service_model, operation_name, api_params)
        assert not problems, f"malformed {service_model.service_name}.{operation_name} request: " + "; ".join(problems)
        RECORDED_REQUESTS.append((service_model.service_name, operation_name, dict(api_params)))
        return original(client, operation_name, api_params)

    RECORDED_REQUESTS.clear()
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", checked)
    yield RECORDED_REQUESTS
    RECORDED_REQUESTS.clear()


def recorded(operation_name: str) -> list[dict[str, Any]]:
    """The parameters of every recorded call of one operation, in order."""
    return [params for _service, operation, params in RECORDED_REQUESTS if operation == operation_name]


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


FAKE_ACCOUNT_SERVICES = ("sts", "iam", "s3", "service-quotas", "bedrock", "bedrock-agent", "bedrock-agent-runtime", "bedrock-runtime")


@pytest.fixture
def fast_tmp(tmp_path):
    """A folder in memory when the machine has one (/dev/shm): each scenario writes the state
    file and the store dozens of times."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return tmp_path
    folder = Path(tempfile.mkdtemp(prefix="localnova-faults-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def boto_clients():
    """One client per service for the whole module: making them is the slow part of a run."""
    import boto3

    session = boto3.session.Session(aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name="us-east-1")
    return {service: session.client(service) for service in FAKE_ACCOUNT_SERVICES}


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
            },
            # a collection the tests pretend is shared: its bill is counted elsewhere
            "vector_store_billed_elsewhere": True,
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
