"""Reference metrics: token F1 and ROUGE-L on hand-worked examples, and the per model x arm
table of them with latency, tokens and recall@k, computed here by hand."""

from __future__ import annotations

import pytest

from localnova.evaluate.metrics import answer_metrics, normalise, rouge_l, token_f1
from localnova.store import AnswerRecord
from localnova.types import EvalItem, GenerationResult

# --- token F1 --------------------------------------------------------------------------


def test_normalisation_drops_case_punctuation_and_whole_word_articles():
    assert normalise("The Cat, an ANTHEM; a theory!") == ["cat", "anthem", "theory"]
    assert normalise("U.S. don't") == ["us", "dont"]


def test_token_f1_ignores_case_punctuation_and_articles():
    assert token_f1("The cat sat.", "a CAT sat") == 1.0
    assert token_f1("U.S.", "us") == 1.0


def test_token_f1_hand_worked_partial_overlap():
    # prediction: cat sat on mat (4 tokens); truth: cat sat (2); common 2:
    # precision 1/2, recall 1, F1 = 2 * 1/2 * 1 / (3/2) = 2/3
    assert token_f1("a cat sat on the mat", "cat sat") == pytest.approx(2 / 3)
    # prediction: 36 watts; truth: f4 draws 36 watts; precision 1, recall 1/2
    assert token_f1("36 watts", "The F4 draws 36 watts.") == pytest.approx(2 / 3)


def test_token_f1_counts_a_repeated_word_only_as_often_as_the_truth_has_it():
    # common = min(3, 1) = 1: precision 1/3, recall 1, F1 = 1/2
    assert token_f1("watts watts watts", "watts") == pytest.approx(0.5)


def test_token_f1_is_zero_without_shared_words():
    assert token_f1("Plug the hub in first.", "36 watts") == 0.0


def test_token_f1_on_empty_strings():
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a") == 1.0  # both empty once articles go
    assert token_f1("", "36 watts") == 0.0
    assert token_f1("36 watts", "") == 0.0


# --- ROUGE-L ---------------------------------------------------------------------------


def test_rouge_l_hand_worked_with_stemming():
    # cats -> cat by stemming; longest common subsequence: the cat sat on mat (5 of 6 each side)
    assert rouge_l("the cats sat on a mat", "the cat sat on the mat") == pytest.approx(5 / 6)


def test_rouge_l_rewards_word_order_where_token_f1_does_not():
    # Same five words, shuffled: the longest common subsequence is two words long.
    shuffled, truth = "mat the on sat cat", "the cat sat on mat"
    assert token_f1(shuffled, truth) == 1.0
    assert rouge_l(shuffled, truth) == pytest.approx(2 / 5)


def test_rouge_l_ignores_case_and_punctuation():
    assert rouge_l("The Cat!", "the cat") == pytest.approx(1.0)


def test_rouge_l_of_an_empty_answer_is_zero():
    assert rouge_l("", "the cat sat") == 0.0


# --- the model x arm table ---------------------------------------------------------------

ITEMS = [
    EvalItem("q1", "How many watts does the F4 draw?", "The F4 draws 36 watts.", ("lamps.md",)),
    EvalItem("q2", "What do you plug in first?", "Plug the hub in first.", ("guides/setup.md",)),
    EvalItem("q3", "Who makes the lamps?", "Fernlight.", ()),  # no gold document
]


def answer(model, arm, question_id, text, latency_ms, input_tokens, output_tokens, retrieved_doc_ids=()):
    retrieved = [{"chunk_id": f"{doc_id}#0", "doc_id": doc_id, "score": 0.5} for doc_id in retrieved_doc_ids]
    result = GenerationResult(text=text, input_tokens=input_tokens, output_tokens=output_tokens, latency_ms=latency_ms)
    return AnswerRecord("run", model, arm, question_id, f"key-{model}-{arm}-{question_id}", retrieved, {}, result)


ANSWERS = [
    answer("small", "base", "q1", "36 watts", 100.0, 10, 5),
    answer("small", "base", "q2", "Plug in the hub first", 300.0, 20, 7),
    answer("small", "rag", "q1", "It draws 36 watts.", 400.0, 200, 6, ["guides/setup.md", "lamps.md"]),  # hit
    answer("small", "rag", "q2", "36 watts", 600.0, 220, 4, ["lamps.md", "lamps.md"]),  # miss
    answer("small", "rag", "q3", "Fernlight", 500.0, 180, 2, ["lamps.md", "guides/setup.md"]),  # no gold: left out
    answer("large", "base", "q1", "Thirty-six watts.", 1000.0, 10, 9),
]


def test_one_cell_per_model_and_arm():
    cells = answer_metrics(ITEMS, ANSWERS, top_k=2)
    assert sorted(cells) == ["large/base", "small/base", "small/rag"]
    assert cells["small/rag"]["model"] == "small" and cells["small/rag"]["arm"] == "rag"
    assert [cells[key]["questions"] for key in ("large/base", "small/base", "small/rag")] == [1, 2, 3]


def test_cell_means_of_f1_rouge_latency_and_tokens_by_hand():
    base = answer_metrics(ITEMS, ANSWERS, top_k=2)["small/base"]
    # q1: 36 watts vs f4 draws 36 watts -> F1 2/3; q2: plug in hub first vs plug hub in first -> 1
    assert base["token_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    # q1: LCS 2 of 2 predicted and 5 true words -> 2 * 1 * 0.4 / 1.4 = 4/7; q2: LCS 4 of 5 -> 0.8
    assert base["rouge_l"] == pytest.approx((4 / 7 + 0.8) / 2)
    assert base["mean_latency_ms"] == pytest.approx(200.0)
    assert base["mean_input_tokens"] == pytest.approx(15.0)
    assert base["mean_output_tokens"] == pytest.approx(6.0)
    rag = answer_metrics(ITEMS, ANSWERS, top_k=2)["small/rag"]
    # q1: it draws 36 watts vs f4 draws 36 watts -> 3/4; q2: 0; q3: fernlight -> 1
    assert rag["token_f1"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert rag["mean_latency_ms"] == pytest.approx(500.0)
    assert rag["mean_input_tokens"] == pytest.approx(200.0)
    assert rag["mean_output_tokens"] == pytest.approx(4.0)


def test_recall_at_k_only_for_arms_that_retrieved_and_by_hand():
    cells = answer_metrics(ITEMS, ANSWERS, top_k=2)
    # q1 found lamps.md, q2 did not find guides/setup.md, q3 has no gold document.
    assert cells["small/rag"]["recall_at_2"] == pytest.approx(0.5)
    for key in ("small/base", "large/base"):
        assert not any(name.startswith("recall_at") for name in cells[key])


def test_recall_at_k_is_named_after_top_k():
    cells = answer_metrics(ITEMS, ANSWERS, top_k=5)
    assert "recall_at_5" in cells["small/rag"] and "recall_at_2" not in cells["small/rag"]


def test_recall_at_k_counts_only_the_first_top_k_retrieved():
    # The gold document in third place is not a hit for recall@2.
    late = [answer("m", "rag", "q1", "36 watts", 1.0, 1, 1, ["guides/setup.md", "guides/setup.md", "lamps.md"])]
    assert answer_metrics(ITEMS, late, top_k=2)["m/rag"]["recall_at_2"] == 0.0


def test_no_answers_give_no_cells():
    assert answer_metrics(ITEMS, [], top_k=3) == {}
