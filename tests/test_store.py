"""The results store: content-keyed calls, resumable runs, one schema with its version."""

import re
import sqlite3

import pytest

from localnova import store_schema
from localnova.backends.base import Backend
from localnova.cli import main
from localnova.errors import USER_ERROR_EXIT, UserError
from localnova.store import DB_NAME, JudgmentRecord, Store
from localnova.store_schema import LATENCY_PROBE_TABLE, SCHEMA, SCHEMA_V1, SCHEMA_VERSION
from localnova.types import ChatRequest, GenerationParams, GenerationResult


class CountingBackend(Backend):
    def __init__(self, name="fake"):
        self.identity = {"backend": "fake", "model": name}
        self.sent = 0

    def generate(self, requests):
        self.sent += len(requests)
        return [GenerationResult(text=r.messages[-1][1].upper(), input_tokens=3, output_tokens=2, latency_ms=5.0) for r in requests]


def requests(n, temperature=0.0):
    return [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams(temperature=temperature)) for i in range(n)]


def test_second_pass_makes_no_calls(tmp_path):
    store = Store(tmp_path)
    store.start_run("s", {"a": 1}, {})
    backend = CountingBackend()
    keys, results = store.generate_cached(backend, requests(5), batch_size=2)
    assert backend.sent == 5 and [r.text for r in results] == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    keys_again, _ = store.generate_cached(backend, requests(5), batch_size=2)
    assert backend.sent == 5 and keys_again == keys
    info = store.run_info()
    assert info["model_calls"] == 5 and info["cached_calls"] == 5


class FailingOnceBackend(CountingBackend):
    """Fails every request the first time it is sent (an error the service still billed), then
    answers: 3 input and 2 output tokens each time, as CountingBackend."""

    def generate(self, requests):
        first = self.sent == 0
        answers = super().generate(requests)
        if first:
            return [GenerationResult(text="", input_tokens=3, output_tokens=2, latency_ms=5.0, finish_reason="error") for _ in answers]
        return answers


def test_a_failed_call_made_again_stays_counted_as_paid(tmp_path):
    """A failure is never replayed, so a rerun calls again and its result replaces the stored
    one; the first call was paid for too, and what the store says was spent keeps both."""
    store = Store(tmp_path)
    store.start_run("s", {"a": 1}, {})
    backend = FailingOnceBackend()
    _, first = store.generate_cached(backend, requests(2), batch_size=2)
    assert all(result.failed for result in first)
    _, again = store.generate_cached(backend, requests(2), batch_size=2)
    assert backend.sent == 4 and [r.text for r in again] == ["Q0", "Q1"]
    usage = store.generation_usage()
    # 4 calls of 3 + 2 tokens, by hand: the two failed ones and the two that replaced them
    assert len(usage) == 4 and sum(tokens_in for _, tokens_in, _ in usage) == 12 and sum(out for *_, out in usage) == 8
    # the same with fresh=True (a failed judgment judged again): a third round of 2 calls
    store.generate_cached(backend, requests(2), batch_size=2, fresh=True)
    assert backend.sent == 6 and len(store.generation_usage()) == 6
    store.close()


def test_key_depends_on_model_and_params(tmp_path):
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    first, second = CountingBackend("a"), CountingBackend("b")
    store.generate_cached(first, requests(2), 4)
    store.generate_cached(second, requests(2), 4)
    store.generate_cached(first, requests(2, temperature=0.5), 4)
    assert (first.sent, second.sent) == (4, 2)


def test_same_config_resumes_the_same_run(tmp_path):
    store = Store(tmp_path)
    run = store.start_run("s", {"x": 1}, {})
    store.finish_run(complete=False)
    store.close()
    reopened = Store(tmp_path)
    assert reopened.start_run("s", {"x": 1}, {}) == run
    assert reopened.start_run("s", {"x": 2}, {}) != run
    assert reopened.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_judgment_keeps_null_score(tmp_path):
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    store.save_judgments([JudgmentRecord("j", "m", "base", "q1", "answer", "k1", None, "parsed", "no parsable score", '["junk"]', 3)])
    [saved] = store.judgments()
    assert saved.score is None and saved.raw_text == '["junk"]'
    assert store.judgment_by_content(["k1"])["k1"].attempts == 3


def _unversioned_store(folder, schema: str) -> None:
    """A store as localnova wrote it before schema versions: tables, user_version 0."""
    connection = sqlite3.connect(folder / DB_NAME)
    connection.executescript(schema)
    connection.close()


def test_new_store_records_its_schema_version(tmp_path):
    store = Store(tmp_path)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


def test_unversioned_store_of_the_current_layout_is_stamped_and_kept(tmp_path):
    _unversioned_store(tmp_path, SCHEMA)
    connection = sqlite3.connect(tmp_path / DB_NAME)
    connection.execute(
        "INSERT INTO runs(run_id, study, config_json, environment_json, status, started_at) VALUES ('s-1','s','{}','{}','complete','t')"
    )
    connection.commit()
    connection.close()
    store = Store(tmp_path)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.run_ids() == ["s-1"]
    store.close()


def test_a_version_1_store_gains_the_latency_probe_table_and_keeps_its_runs(tmp_path):
    connection = sqlite3.connect(tmp_path / DB_NAME)
    connection.executescript(SCHEMA_V1)
    connection.execute(
        "INSERT INTO runs(run_id, study, config_json, environment_json, status, started_at) VALUES ('s-1','s','{}','{}','complete','t')"
    )
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()
    store = Store(tmp_path)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert store.run_ids() == ["s-1"] and store.probe_timings("s-1") == [] and store.probe_calls("s-1") == []
    store.close()


def test_a_version_2_store_opens_the_probe_ledger_with_the_calls_it_paid_for(tmp_path):
    """Version 2 kept a probe call's tokens on its timing row; a timing reused from another run
    was paid there. The ledger starts with the timings each run measured itself, once each."""
    connection = sqlite3.connect(tmp_path / DB_NAME)
    connection.executescript(SCHEMA_V1 + LATENCY_PROBE_TABLE + ";")
    row = "INSERT INTO latency_probe VALUES (?, 'm', 'base', 'q1', 0, 0, 'k', '{\"backend\": \"b\"}', 12.5, ?, 2, 't', ?)"
    connection.execute(row, ("run-a", 7, "run-a"))  # measured by run-a: paid by run-a
    connection.execute(row, ("run-b", 7, "run-a"))  # run-b reused run-a's round: no call of its own
    connection.execute(row.replace("'base'", "'ft'"), ("run-b", 11, "run-b"))
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()
    store = Store(tmp_path)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted((identity, tokens_in) for identity, tokens_in, _ in store.generation_usage()) == [
        ({"backend": "b"}, 7),
        ({"backend": "b"}, 11),
    ]
    assert [(call.arm, call.kind, call.round, call.input_tokens) for call in store.probe_calls("run-b")] == [("ft", "timed", 0, 11)]
    store.close()


def test_older_store_is_refused_with_one_line_naming_it(tmp_path):
    # the judgments table of a store without the attempts column: not a layout this code reads
    old_schema = SCHEMA.replace("    attempts INTEGER NOT NULL,\n", "")
    assert old_schema != SCHEMA
    _unversioned_store(tmp_path, old_schema)
    with pytest.raises(UserError) as raised:
        Store(tmp_path)
    message = str(raised.value)
    assert str(tmp_path / DB_NAME) in message and "older localnova" in message and "move it aside" in message
    assert "\n" not in message
    # nothing was changed: the store is still unversioned
    assert sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA user_version").fetchone()[0] == 0


def test_store_of_an_older_version_without_migration_is_refused(tmp_path, monkeypatch):
    Store(tmp_path).close()
    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(UserError, match=rf"schema version {SCHEMA_VERSION}; this localnova reads version {SCHEMA_VERSION + 1}"):
        Store(tmp_path)


def test_store_of_an_older_version_is_migrated_step_by_step(tmp_path, monkeypatch):
    Store(tmp_path).close()

    def add_note_column(connection):
        connection.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_schema.MIGRATIONS, SCHEMA_VERSION, add_note_column)
    store = Store(tmp_path)
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "note" in [column[1] for column in store.connection.execute("PRAGMA table_info(runs)")]
    store.close()


def test_newer_store_is_refused(tmp_path):
    Store(tmp_path).close()
    connection = sqlite3.connect(tmp_path / DB_NAME)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / DB_NAME))}: store schema version {SCHEMA_VERSION + 1} .*newer"):
        Store(tmp_path)


def test_cli_turns_a_refused_store_into_exit_code_2(tmp_path, capsys):
    Store(tmp_path).close()
    connection = sqlite3.connect(tmp_path / DB_NAME)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    assert main(["report", str(tmp_path)]) == USER_ERROR_EXIT
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("localnova: error: ") and str(tmp_path / DB_NAME) in error_lines[0]


def test_every_invocation_of_a_run_keeps_its_calls(tmp_path):
    """A run opened three times: the first makes 3 calls, the second (killed, never finished) 2
    more, the third none. The runs table holds the latest invocation's counts; the earlier ones
    are kept, so the report counts 5 calls in all and 0 from the store in the first."""
    from localnova.report.collect import collect_run

    store, backend = Store(tmp_path), CountingBackend()
    run_id = store.start_run("s", {"a": 1}, {})
    store.generate_cached(backend, requests(3), 8)
    store.finish_run(True)
    store.start_run("s", {"a": 1}, {})
    store.generate_cached(backend, requests(5), 8)  # 3 from the store, 2 new; then killed
    store.start_run("s", {"a": 1}, {})
    store.generate_cached(backend, requests(5), 8)
    store.finish_run(True)
    store.close()
    run = collect_run(tmp_path, run_id)
    assert [(i["status"], i["model_calls"], i["cached_calls"]) for i in run.invocations] == [
        ("complete", 3, 0),
        ("running", 2, 3),
        ("complete", 0, 5),
    ]
    assert (run.info["model_calls"], run.model_calls, run.calls_from_store) == (0, 5, 0) and backend.sent == 5


def test_a_rerun_from_the_store_keeps_the_environment_that_did_the_work(tmp_path):
    """The environment a run records is that of its latest invocation that called a model: a
    rerun answered from the store (which loads no torch, so reports no torch threads) leaves it."""
    store, backend = Store(tmp_path), CountingBackend()
    run_id = store.start_run("s", {"a": 1}, {"machine": "first"})
    store.generate_cached(backend, requests(2), 8)
    store.finish_run(True)
    store.start_run("s", {"a": 1}, {"machine": "rerun from the store"})
    store.generate_cached(backend, requests(2), 8)
    store.finish_run(True)
    assert store.run_info(run_id)["environment"] == {"machine": "first"}
    store.start_run("s", {"a": 1}, {"machine": "more work"})
    store.generate_cached(backend, requests(3), 8)
    store.finish_run(True)
    assert store.run_info(run_id)["environment"] == {"machine": "more work"} and backend.sent == 3
    store.close()
