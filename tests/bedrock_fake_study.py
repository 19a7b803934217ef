"""A Bedrock study against the fake account (bedrock_fake_account.py), for the tests that run
the tool's whole paid path: the run and its reruns, cleanup, and the checks of its promises.

The tool runs as it would for a user, with three things made fast and deterministic: one boto3
client per service for the whole test module (making clients is slow), a fake clock that the
tool's waits move, and a state file written whole and renamed but not fsynced.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bedrock_fake_account import FakeAccount, FakeClock
from bedrock_fixtures import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, study_config, write_nova_training
from localnova.aws import clients as aws_clients
from localnova.aws import state as aws_state
from localnova.aws.clients import AwsClients
from localnova.aws.state import BedrockState
from localnova.backends import bedrock_backend
from localnova.bedrock.cleanup import cleanup_command
from localnova.bedrock_study import study as bedrock_study
from localnova.budget import SpendGuard
from localnova.errors import UserError
from localnova.files import write_text_atomic
from localnova.store import DB_NAME, Store

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
GUARD_BEFORE = SpendGuard.before  # the guard's own check, which each harness wraps once


def fault_config(tmp_path: Path, hosting: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = study_config(tmp_path, hosting=hosting, budget_usd=5000)
    train = write_nova_training(tmp_path / "train.jsonl")
    judge = config.judges[0].model_copy(
        update={"model": config.judges[0].model.model_copy(update={"model": SONNET, "name": "claude-sonnet-4-5"})}
    )
    return config.model_copy(
        update={
            "judges": [judge],
            "finetune": config.finetune.model_copy(update={"train_path": train, "decontaminate_train_path": False}),
            "eval": config.eval.model_copy(update={"controls": False, "bootstrap_samples": 20}),
        }
    )


class Harness:
    """The tool against one fake account: runs, reruns and cleanup, and the guard's checks."""

    def __init__(self, monkeypatch, tmp_path: Path, boto_clients, hosting: str):
        self.clock = FakeClock()
        self.account = FakeAccount(self.clock)
        self.account.install(monkeypatch)
        self.config = fault_config(tmp_path, hosting)
        self.boto_clients = boto_clients
        self.guard_below_meter: list[str] = []
        self.said: list[str] = []  # what the last run said of what it leaves (its start and end lines)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        monkeypatch.setattr(aws_state, "now", self.clock)
        monkeypatch.setattr(aws_clients, "SLEEP", self.clock.advance)
        monkeypatch.setattr(bedrock_backend, "make_client", lambda service, region: boto_clients[service])
        monkeypatch.setattr(bedrock_backend, "require_credentials", lambda region: None)
        # the state file is still written whole and renamed over the old one, only not fsynced:
        # the tests kill no machine, and hundreds of fsyncs would be most of their time
        monkeypatch.setattr(aws_state, "write_text_atomic", lambda path, text, fsync=False: write_text_atomic(path, text))
        # the estimate's prompt lengths come from the eval set: no local index to build
        monkeypatch.setattr(bedrock_study, "actual_answer_requests", lambda config: None)
        harness = self

        def checked_before(guard, step, estimated_cost_usd):
            spent, billed = guard.spent_usd, harness.account.meter_total()
            if spent < billed - 1e-9:
                harness.guard_below_meter.append(f"before {step}: guard ${spent:.8f} < meter ${billed:.8f}")
            return GUARD_BEFORE(guard, step, estimated_cost_usd)

        monkeypatch.setattr(SpendGuard, "before", checked_before)

    def clients(self) -> AwsClients:
        return AwsClients("us-east-1", dict(self.boto_clients), check_credentials=False)

    def run(self, keep_hosting: bool = False) -> tuple[str, str]:
        """('ok' | 'error' | 'interrupted', the line the user reads); `said` gets the lines the run
        printed about what it leaves in the account."""
        self.said = []
        try:
            bedrock_study.run_bedrock_study(
                self.config,
                dry_run_only=False,
                allow_spend=True,
                assume_yes=True,
                clients=self.clients(),
                keep_hosting=keep_hosting,
                report_left=self.said.append,
            )
        except UserError as error:
            return "error", str(error)
        except KeyboardInterrupt:
            return "interrupted", "interrupted; run the same command again to resume"
        return "ok", ""

    def cleanup(self, bucket: str | None = None) -> int:
        return cleanup_command(self.config.study_dir, yes=True, clients=self.clients(), bucket=bucket)

    def check_exit_lines(self, where: str) -> None:
        """What the last run's closing lines name covers what the account holds and bills: every
        hosting, running customization job and ingestion, custom model, Knowledge Base and data
        source by its ARN, id or name, every S3 object by the study's prefix line; and the
        cleanup command is named whenever anything is left."""
        if not self.said:  # it stopped before its first billable call: it made nothing to name
            assert self.account.held() == [] and self.account.live_billable() == [], f"{where}: made something and said nothing"
            return
        text = self.said[-1]
        for kind, names in self.account.held():
            if kind == "s3_object":
                assert any(f"s3://{self.account.bucket}/" in line and "S3:" in line for line in text.splitlines()), (
                    f"{where}: S3 objects {sorted(names)} are not named in: {text}"
                )
                continue
            assert any(name in text for name in names), f"{where}: the account holds {kind} {sorted(names)}, not named in: {text}"
        for live in self.account.live_billable():
            kind, _, ident = live.rpartition(" ")
            assert ident in text, f"{where}: {live} still bills, not named in: {text}"
        if self.account.held() or self.account.live_billable():
            assert f"localnova bedrock cleanup {self.config.study_dir}" in text, f"{where}: no cleanup command in: {text}"
        else:
            assert "nothing is left in the account" in text, f"{where}: the account holds nothing, but the run said: {text}"

    def check_promises(self, where: str) -> None:
        account, state = self.account, BedrockState.load(self.config.study_dir)
        assert account.live_billable() == [], f"{where}: still billing: {account.live_billable()}"
        named = set()
        for resource in state.live():
            named |= {resource.arn, resource.id, resource.name, resource.key}
        prefixes = [r.details.get("prefix", "") for r in state.live() if r.type == "s3_prefix"]
        for kind, names in account.held():
            under_prefix = kind == "s3_object" and any(n.startswith(p) for n in names for p in prefixes if p)
            assert names & named or under_prefix, f"{where}: the account holds {kind} {sorted(names)} that the state does not name"
        assert not self.guard_below_meter, f"{where}: " + "; ".join(self.guard_below_meter[:3])
        paid_twice = [key for key, count in account.delivered.items() if count > 1]
        assert not paid_twice, f"{where}: {len(paid_twice)} answer(s) paid for twice"
        probed_twice = [dict(tags) for (_, tags), count in account.probe_delivered.items() if count > 1]
        assert not probed_twice, f"{where}: latency probe call(s) paid for twice: {probed_twice[:3]}"
        delivered, stored = self.probe_calls()
        assert delivered == stored, f"{where}: probe calls paid {sorted(delivered.elements())} but stored {sorted(stored.elements())}"

    def probe_calls(self) -> tuple[Counter, Counter]:
        """The latency probe's calls that reached the tool, and those its store's ledger holds,
        each as (what, run, model, then arm, question and round, or a warm-up's sitting)."""
        delivered: Counter = Counter()
        for (_, tags), count in self.account.probe_delivered.items():
            named = dict(tags)
            where = ("arm", "question", "round") if named["localnova-call"] == "latency-probe" else ("sitting",)
            delivered[tuple(named[k] for k in ("localnova-call", "localnova-run", "model", *where))] += count
        stored: Counter = Counter()
        if not (self.config.study_dir / DB_NAME).is_file():
            return delivered, stored
        store = Store(self.config.study_dir)
        try:
            for run_id in store.run_ids():
                for call in store.probe_calls(run_id):
                    where = (call.arm, call.question_id, str(call.round)) if call.kind == "timed" else (str(call.sitting),)
                    what = "latency-probe" if call.kind == "timed" else "latency-probe-warm-up"
                    stored[(what, run_id, call.model, *where)] += 1
        finally:
            store.close()
        return delivered, stored
