"""`localnova bedrock estimate CONFIG`: the checks of a paid run and its cost table, nothing else.

It runs what `localnova run` runs before its first billable call (the placeholders and the
request check, the preflight, which blocks on what it could not check, and the prices of every
billable model) and prints the estimate, both hosting choices side by side, then what the
account already holds for the study, with its cost, when it holds anything (an earlier run
killed where it could not act). It creates nothing and asks nothing.
"""

from __future__ import annotations

from localnova.aws.clients import AwsClients
from localnova.aws.state import BedrockState
from localnova.bedrock.placeholders import check_no_placeholders
from localnova.bedrock.preflight import require_preflight
from localnova.bedrock.requests import check_requests
from localnova.bedrock_study.dry_run import actual_answer_requests, dry_run
from localnova.bedrock_study.stopping import say_at_start
from localnova.bedrock_study.study import with_bedrock_settings
from localnova.config import StudyConfig
from localnova.costs import format_cost_table
from localnova.errors import UserError


def estimate_command(config: StudyConfig, skip_checks: tuple[str, ...] | list[str] = (), clients: AwsClients | None = None) -> int:
    """Check and estimate one Bedrock study; print the preflight's verdict and the cost table."""
    if config.bedrock is None:
        raise UserError("bedrock: an estimate of the Bedrock path needs a bedrock section")
    config = with_bedrock_settings(config)
    check_no_placeholders(config)
    check_requests(config)
    clients = clients or AwsClients(config.bedrock.region)
    report = require_preflight(config, clients, skip_checks)
    result = dry_run(config, answer_requests=actual_answer_requests(config), out=None)
    print(report.format().splitlines()[-1])
    print(f"Estimated cost of study {config.name!r} on Bedrock ({config.bedrock.region}), USD:")
    print(format_cost_table(result.costs))
    print(f"budget_usd: {config.bedrock.budget_usd:,.2f}; hosting chosen: {config.bedrock.hosting}")
    say_at_start(config, BedrockState.load(config.study_dir), clients, print)
    return 0
