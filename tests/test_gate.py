"""The CI gate: `localnova report RUN --fail-on RULE` exits 3, one line per problem, when a judge
fails its controls or a named finding is contradicted; 0 when nothing trips; 2 for a rule or a
finding id it does not know. And the CLI's edges the issue lists."""

import pytest

from localnova.cli import main
from test_report import build_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate") / "study"
    build_study(folder, "gate-demo")  # judge-f1 rewards another question's truth: it fails its controls
    return folder


def test_a_judge_that_fails_its_controls_trips_the_gate(study, capsys):
    assert main(["report", str(study), "--fail-on", "judge-controls"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("localnova: gate: judge judge-f1 failed its controls")


def test_nothing_trips_without_a_rule_or_when_no_finding_is_contradicted(study, capsys):
    assert main(["report", str(study)]) == 0
    # the study's two arms (base, rag) contradict none of the post's findings
    assert main(["report", str(study), "--fail-on", "contradicted"]) == 0
    assert main(["report", str(study), "--fail-on", "contradicted:rag-raises-score,ft-raises-score"]) == 0


@pytest.mark.parametrize(
    ("rule", "error"), [("contradicted:nope", "no finding 'nope' in nova_case_study"), ("sometimes", "expected contradicted")]
)
def test_an_unknown_rule_or_finding_is_a_user_error(study, capsys, rule, error):
    assert main(["report", str(study), "--fail-on", rule]) == 2
    assert error in capsys.readouterr().err


def test_loudness_flags_go_after_the_verb_too(study, capsys):
    assert main(["report", str(study), "-q"]) == 0
