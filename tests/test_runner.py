"""The judging loop: one judge model loaded at a time, each closed, judgments reused on a rerun."""

import pytest

from localnova.backends.base import Backend
from localnova.config import validate_config
from localnova.evaluate.judges import build_panel
from localnova.evaluate.judges import llm as llm_module
from localnova.evaluate.runner import ArmAnswers, judge_inputs, run_panel
from localnova.store import Store
from localnova.types import EvalItem, GenerationResult


class CountingBackend(Backend):
    """A fake judge model that counts how many of its kind are loaded at once."""

    live = 0
    most_live = 0
    instances: list["CountingBackend"] = []

    def __init__(self, model, adapter_path=None):
        self.identity = {"backend": "counting", "model": model.model}
        self.closed = False
        self.requests = 0
        CountingBackend.live += 1
        CountingBackend.most_live = max(CountingBackend.most_live, CountingBackend.live)
        CountingBackend.instances.append(self)

    def generate(self, requests):
        assert not self.closed, "a closed backend was asked to generate"
        self.requests += len(requests)
        return [GenerationResult(text='{"score": 7, "reason": "fine"}', input_tokens=1, output_tokens=1, latency_ms=1.0) for _ in requests]

    def close(self):
        if not self.closed:
            self.closed = True
            CountingBackend.live -= 1


@pytest.fixture
def counting(monkeypatch):
    CountingBackend.live, CountingBackend.most_live, CountingBackend.instances = 0, 0, []
    monkeypatch.setattr(llm_module, "create_backend", CountingBackend)
    return CountingBackend


def study_config(tmp_path):
    llm = [
        {
            "name": name,
            "kind": "llm",
            "model": {"name": name, "backend": "simulated", "model": f"{name}-1", "generation": {"batch_size": 2}},
        }
        for name in ("judge-a", "judge-b")
    ]
    return validate_config(
        {
            "name": "s",
            "output_dir": str(tmp_path),
            "corpus": {"path": str(tmp_path)},
            "eval": {"path": str(tmp_path / "eval.jsonl")},
            "models": [{"name": "m", "backend": "simulated", "model": "m-1"}],
            "judges": [llm[0], {"name": "f1", "kind": "token_f1"}, llm[1]],
        }
    )


ITEMS = [EvalItem("q1", "What colour is the sky?", "Blue."), EvalItem("q2", "How many legs has a spider?", "Eight.")]
ANSWERS = [ArmAnswers("m", "base", ["q1", "q2"], ["Blue.", "Six."])]


def test_run_panel_opens_one_judge_at_a_time_and_closes_each(tmp_path, counting):
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    judge_items = judge_inputs(ITEMS, ANSWERS, with_controls=True)  # 2 answers + 3 controls x 2 questions
    panel = build_panel(study_config(tmp_path))
    assert counting.instances == []
    timings: dict[str, float] = {}
    made = run_panel(store, panel, judge_items, timings)
    assert made == {"judge-a": 8, "f1": 8, "judge-b": 8}
    assert counting.most_live == 1 and counting.live == 0
    assert len(counting.instances) == 2 and all(backend.closed for backend in counting.instances)
    assert all(backend.requests > 0 for backend in counting.instances)
    assert set(timings) == {"judge judge-a", "judge f1", "judge judge-b"}
    scores = {(j.judge, j.subject, j.question_id): j.score for j in store.judgments()}
    assert scores[("judge-a", "answer", "q1")] == 7 and scores[("f1", "answer", "q1")] == 10 and scores[("f1", "control_empty", "q2")] == 0

    # a rerun reuses every judgment: each judge model is still opened (its identity is part
    # of the key) but is asked nothing
    again = run_panel(store, build_panel(study_config(tmp_path)), judge_items, timings)
    assert again == {"judge-a": 0, "f1": 0, "judge-b": 0}
    assert [backend.requests for backend in counting.instances[2:]] == [0, 0] and counting.live == 0
    store.close()


def test_a_judge_that_fails_is_still_closed(tmp_path, counting, monkeypatch):
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    monkeypatch.setattr(CountingBackend, "generate", lambda self, requests: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_panel(store, build_panel(study_config(tmp_path)), judge_inputs(ITEMS, ANSWERS, with_controls=False), {})
    assert len(counting.instances) == 1 and counting.instances[0].closed and counting.live == 0
    store.close()


def test_each_further_adapter_answers_the_ft_arms_under_its_own_name(tmp_path, monkeypatch):
    from localnova.evaluate import runner as runner_module
    from localnova.evaluate.arms import DEFAULT_PROMPT, ArmInputs
    from localnova.evaluate.runner import answer_replicates

    loaded = []

    class AdapterEcho(Backend):
        def __init__(self, model, adapter_path=None):
            self.identity = {"backend": "echo", "model": model.model, "adapter": str(adapter_path)}
            self.adapter = adapter_path
            loaded.append(self)

        def generate(self, requests):
            return [GenerationResult(f"from {self.adapter}", 1, 1, 1.0) for _ in requests]

        def close(self):
            self.closed = True

    monkeypatch.setattr(runner_module, "create_backend", AdapterEcho)
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    model = study_config(tmp_path).models[0]
    adapters = {"m": "first", "m@seed1": "second", "m@seed2": "third", "other@seed1": "not m's"}
    arm_inputs = {"ft": ArmInputs(DEFAULT_PROMPT, [None] * len(ITEMS))}
    answers = answer_replicates(store, model, ["ft"], ITEMS, arm_inputs, 0, {}, adapters)
    assert [(a.model, a.arm, a.texts) for a in answers] == [
        ("m@seed1", "ft", ["from second", "from second"]),
        ("m@seed2", "ft", ["from third", "from third"]),
    ]
    assert [b.adapter for b in loaded] == ["second", "third"] and all(b.closed for b in loaded)
    assert sorted({a.model for a in store.answers()}) == ["m@seed1", "m@seed2"]
    assert answer_replicates(store, model, [], ITEMS, arm_inputs, 0, {}, adapters) == []  # no ft arm, nothing loaded
    store.close()
