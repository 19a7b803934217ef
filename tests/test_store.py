"""The results store: content-keyed calls, resumable runs, one schema."""

from localnova.backends.base import Backend
from localnova.store import JudgmentRecord, Store
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
