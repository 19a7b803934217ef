"""The whole config checked against what the service accepts, before the first billable call:
one line naming the key, exit code 2, nothing created. The ranges, patterns and enums come from
botocore's model of each operation; the per-model rule from Anthropic's and AWS's statements."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("botocore")

from bedrock_fixtures import study_config  # noqa: E402
from localnova.bedrock.requests import check_requests, request_check_problems  # noqa: E402
from localnova.cli import main  # noqa: E402
from localnova.config import config_to_dict, load_config, validate_config  # noqa: E402
from localnova.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "bedrock-nova.yaml"


def changed(tmp_path, **sections):
    data = config_to_dict(study_config(tmp_path))
    for section, values in sections.items():
        node = data
        *path, last = section.split(".")
        for key in path:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = values if not isinstance(node.get(last) if isinstance(node, dict) else None, dict) else {**node[last], **values}
    return validate_config(data)


def test_the_shipped_config_and_the_test_study_send_only_what_the_service_takes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert request_check_problems(load_config(SHIPPED)) == []
    assert request_check_problems(study_config(tmp_path)) == []


@pytest.mark.parametrize(
    "section, values, key, what",
    [
        ("models.0.generation", {"temperature": 1.5}, "models[0].generation.temperature", "1.5 is out of range: the service takes 0 to 1"),
        ("judges.0.model.generation", {"temperature": 2.0}, "judges[0].model.generation.temperature", "2 is out of range"),
        ("retrieval", {"top_k": 101}, "retrieval.top_k", "101 is out of range: the service takes 1 to 100"),
        (
            "corpus.chunking",
            {"strategy": "hierarchical", "overlap_tokens": 0},
            "corpus.chunking.overlap_tokens",
            "the service takes at least 1",
        ),
        (
            "corpus.chunking",
            {"chunk_tokens": 300, "overlap_tokens": 0},
            "corpus.chunking.overlap_tokens (as a percentage of chunk_tokens)",
            "0 is out",
        ),
        ("corpus.chunking", {"chunk_tokens": 9000, "overlap_tokens": 60}, "corpus.chunking.chunk_tokens", "the service takes 1 to 8192"),
        ("corpus.chunking", {"strategy": "semantic", "breakpoint_percentile": 40}, "corpus.chunking.breakpoint_percentile", "50 to 99"),
        ("bedrock", {"role_arn": "not-an-arn"}, "bedrock.role_arn", "not of the form the service takes"),
        ("bedrock.knowledge_base", {"storage": {"type": "S3_VECTOR"}}, "bedrock.knowledge_base.storage", "is not one of"),
    ],
)
def test_a_value_the_service_refuses_is_named_by_its_key(tmp_path, section, values, key, what):
    with pytest.raises(UserError) as refused:
        check_requests(changed(tmp_path, **{section: values}))
    line = str(refused.value)
    assert line.startswith(f"{key}: ") and "\n" not in line and line.endswith("nothing was created")
    assert what in line


def test_claude_sonnet_4_5_takes_temperature_or_top_p_not_both(tmp_path):
    """Anthropic: 'Use only temperature OR top_p, not both' for the 4.5 models; Bedrock answers
    ValidationException. Sending topP only when top_p < 1 keeps the default config valid."""
    sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    config = changed(tmp_path, **{"judges.0.model": {"model": sonnet}})
    assert request_check_problems(config) == []
    config = changed(tmp_path, **{"judges.0.model": {"model": sonnet}, "judges.0.model.generation": {"top_p": 0.9}})
    with pytest.raises(UserError, match=r"^judges\[0\]\.model\.generation\.top_p: this model takes temperature or topP, not both"):
        check_requests(config)
    # another judge may set both
    assert request_check_problems(changed(tmp_path, **{"judges.0.model.generation": {"top_p": 0.9}})) == []


@pytest.fixture
def no_aws_credentials(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.mark.parametrize(
    "setting, line_start",
    [
        (
            "judges.0.model.model=us.anthropic.claude-opus-4-1-20250805-v1:0",
            "judges[0].model.model: us.anthropic.claude-opus-4-1-20250805-v1:0 has no price",
        ),
        ("models.1.generation.temperature=1.5", "models[1].generation.temperature: 1.5 is out of range"),
    ],
)
def test_the_dry_run_refuses_an_unpriced_model_or_an_out_of_range_setting_in_one_line(
    tmp_path, no_aws_credentials, capsys, setting, line_start
):
    code = main(["run", str(SHIPPED), "--dry-run", "--set", f"output_dir={tmp_path}", "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"localnova: error: {line_start}")
    assert not (tmp_path / "bedrock-nova-dry-run").exists()
