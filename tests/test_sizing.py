"""Sizing a study before it runs: `--plan` and `--dry-run` say what each comparison can detect,
from a stated default or a pilot run's spreads; `--detect` gives the questions needed and, on
Bedrock, the dry run's cost of that many questions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from localnova.bedrock_study.dry_run import dry_run
from localnova.config import load_config
from localnova.errors import UserError
from localnova.evaluate.power import DEFAULT_VARIANCE, Spread, VarianceSource, detectable_difference, questions_needed
from localnova.report.collect import collect_run
from localnova.report.summarize import summarize_run
from localnova.sizing import parse_detect, pilot_variance, power_lines
from test_report import build_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_parse_detect_takes_a_percentage():
    assert parse_detect("10%") == 10.0 and parse_detect("7.5") == 7.5 and parse_detect(" 12 % ") == 12.0
    for bad in ("ten", "-5%", "0%", "10pt", ""):
        with pytest.raises(UserError, match="--detect"):
            parse_detect(bad)


def test_plan_lines_with_the_stated_default(in_repo):
    config = load_config("configs/demo.yaml")
    lines = power_lines(config, 60, DEFAULT_VARIANCE, detect_pct=10.0)
    # one model x 4 arms: 6 comparisons, each at 0.05 / 6
    assert "6 comparisons are Holm-adjusted together" in lines[0] and "0.0083" in lines[0]
    assert lines[1] == f"  spread of the per-question differences: {DEFAULT_VARIANCE.source}"
    detectable = detectable_difference(2.0, 60, 6)
    needed = questions_needed(2.0, 0.1 * 5.0, 6)
    assert lines[2] == (
        f"  each of the 6 comparisons per model (SD 2.00 points, 0% alike): with 60 questions detects {detectable:.2f} points "
        f"({100 * detectable / 5.0:.0f}% of a base of 5.00); 10% needs {needed} questions"
    )
    assert lines[3] == f"  10% in every comparison needs {needed} questions" and len(lines) == 4  # not Bedrock: no cost


def test_a_pilot_run_gives_each_comparison_its_own_spread(tmp_path):
    build_study(tmp_path / "pilot", "pilot-study")
    variance = pilot_variance(str(tmp_path / "pilot"))
    summary = summarize_run(collect_run(tmp_path / "pilot"))
    # two models compare base and rag: the SD is their root mean square, the zero share and base their mean
    sds = [c.sd_nonzero for c in summary.comparisons]
    zeros = [c.zero_share for c in summary.comparisons]
    bases = [c.mean for c in summary.panel_cells if c.arm == "base"]
    expected = Spread(pytest.approx(np.sqrt(np.mean(np.square(sds)))), pytest.approx(np.mean(zeros)), pytest.approx(np.mean(bases)))
    assert variance.spread("base", "rag") == expected
    # a plan that compares the arms the other way round takes the same spread, on rag's level
    rags = [c.mean for c in summary.panel_cells if c.arm == "rag"]
    assert variance.spread("rag", "base") == Spread(expected.sd_nonzero, expected.zero_share, pytest.approx(np.mean(rags)))
    assert variance.source.startswith("pilot run pilot-study-") and "headline judges judge-a" in variance.source
    config = load_config(REPO / "configs" / "demo.yaml", [f"arms={['base', 'rag']}"])
    lines = power_lines(config, 30, variance)
    spread = variance.spread("base", "rag")
    detectable = detectable_difference(spread.sd_nonzero, 30, 1, spread.zero_share)
    assert lines[2] == (
        f"  rag vs base (SD {spread.sd_nonzero:.2f} points, {spread.zero_share:.0%} alike): with 30 questions detects "
        f"{detectable:.2f} points ({100 * detectable / spread.base_level:.0f}% of a base of {spread.base_level:.2f})"
    )


def test_a_pilot_without_a_comparison_is_a_clear_error(tmp_path):
    # judge-a failed one answer of large/base, which this gate allows none of; judge-f1 never
    # ranks the truth first: nobody passes, so there is no headline panel to compare arms on
    build_study(tmp_path / "pilot", "pilot-study", control_gate={"max_answer_failure_rate": 0.0})
    with pytest.raises(UserError, match="no comparison of two arms on its headline panel"):
        pilot_variance(str(tmp_path / "pilot"))


def test_detect_on_bedrock_gives_the_dry_runs_cost_of_the_questions_needed(in_repo):
    config = load_config("configs/bedrock-nova.yaml")
    variance = VarianceSource("test", Spread(1.5, 0.1, 6.0))
    lines = power_lines(config, 10, variance, detect_pct=10.0)
    needed = questions_needed(1.5, 0.6, 12, 0.1)  # two models x 6 pairs of arms
    costs = dry_run(config, n_questions=needed, out=None).costs
    assert lines[-2] == f"  10% in every comparison needs {needed} questions"
    assert lines[-1] == (
        f"  on Bedrock, {needed} questions cost about ${costs.total('on_demand'):,.2f} hosted on-demand, "
        f"${costs.total('provisioned'):,.2f} hosted provisioned (the dry run's estimate)"
    )


def test_cli_plan_prints_the_detectable_change(in_repo, capsys):
    from localnova.cli import main

    assert main(["run", "configs/demo.yaml", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "Power (80%, two-sided; 6 comparisons" in out
    assert f"with 60 questions detects {detectable_difference(2.0, 60, 6):.2f} points" in out


def test_too_few_questions_detect_nothing_and_the_plan_says_why(in_repo):
    config = load_config("configs/demo.yaml")
    (line,) = power_lines(config, 10, VarianceSource("test", Spread(2.0, 0.25, 5.0)))[2:]
    assert line == (
        "  each of the 6 comparisons per model (SD 2.00 points, 25% alike): with 10 questions detects no change with 80% power: "
        "however large the change, the test clears its level only when enough questions differ, which happens 53% of the time"
    )


def test_cli_dry_run_prints_power_before_the_study_and_pilot_needs_a_plan(in_repo, monkeypatch, capsys):
    from localnova import cli

    def stop(*args, **kwargs):
        raise UserError("stopped here by the test")

    monkeypatch.setattr(cli, "run_bedrock_study", stop)
    assert cli.main(["run", "configs/bedrock-nova.yaml", "--dry-run", "--limit", "10", "--detect", "20%"]) == 2
    out = capsys.readouterr().out
    assert "12 comparisons are Holm-adjusted together" in out and "with 10 questions detects" in out and "20% needs" in out
    assert cli.main(["run", "configs/demo.yaml", "--pilot", "runs/demo"]) == 2
    assert "use them with --plan or --dry-run" in capsys.readouterr().err


def test_a_pilot_whose_questions_share_documents_plans_by_document():
    """At the pilot's 2 questions per document, 10 questions are 5 documents: a sign-flip test
    over 5 clusters has no p below 2 / 2**5 = 0.0625, so under 12 comparisons nothing can be
    detected; and the design effect makes a target need more questions than independent ones."""
    from localnova.evaluate.power import Spread
    from localnova.sizing import _detectable_text

    clustered = Spread(1.0, 0.0, 5.0, design_effect=1.3, questions_per_cluster=2.0)
    assert "from 5 documents, whose sign patterns give no p below 2 / 2**5 = 0.0625" in _detectable_text(clustered, 10, 12)
    independent = Spread(1.0, 0.0, 5.0)
    assert _detectable_text(independent, 60, 1) != _detectable_text(clustered, 60, 1)
