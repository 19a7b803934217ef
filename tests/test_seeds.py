"""Training seeds in the uncertainty: replicate names, folding adapters, the seed part of a
change's variance by hand, and a summary of a study whose ft arm three adapters answered."""

from __future__ import annotations

import math

import numpy as np
import pytest

from localnova.evaluate.seeds import fold_replicates, replicate_name, seed_component, seeded_change, split_replicate
from localnova.evaluate.statistics import ScoreRow, paired_change, score_rows_from
from localnova.evaluate.summary import summarize


def test_replicate_names_round_trip_and_leave_plain_names_alone():
    assert replicate_name("smollm2", 1) == "smollm2@seed1"
    assert split_replicate("smollm2@seed1") == ("smollm2", "seed1")
    assert split_replicate("smollm2") == ("smollm2", "")
    assert split_replicate("odd@seedname") == ("odd@seedname", "")


def test_folded_scores_are_the_mean_over_adapters_and_fail_with_any():
    rows = score_rows_from(
        [
            ScoreRow("m", "ft", "q1", "j", 4.0),
            ScoreRow("m@seed1", "ft", "q1", "j", 6.0),
            ScoreRow("m", "ft", "q2", "j", 4.0),
            ScoreRow("m@seed1", "ft", "q2", "j", None),
            ScoreRow("m", "base", "q1", "j", 3.0),
        ]
    )
    folded, adapters = fold_replicates(rows)
    expected = {("m", "ft", "q1"): 5.0, ("m", "ft", "q2"): None, ("m", "base", "q1"): 3.0}
    assert {(r.model, r.arm, r.question_id): r.score for r in folded} == expected
    assert sorted(adapters) == ["", "seed1"] and {r.model for r in adapters["seed1"]} == {"m"}
    plain = score_rows_from([ScoreRow("m", "ft", "q1", "j", 4.0)])
    assert fold_replicates(plain) == (plain, {})


def test_seed_component_by_hand():
    # two seeds whose differences are 1, 2, 3 and 3, 4, 5: no interaction, seed means 2 and 4;
    # MS_seeds = 3 * ((2 - 3)**2 + (4 - 3)**2) / 1 = 6, MS_residual = 0: 6 / (3 * 2) = 1, the
    # variance of the mean of two seed means 2 and 4 (var 2, over 2 seeds)
    assert seed_component(np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])) == pytest.approx(1.0)
    # seeds that agree up to noise smaller than the noise itself add nothing
    assert seed_component(np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]])) == 0.0
    assert seed_component(np.array([[1.0, 2.0, 3.0]])) == 0.0


def _values(scores: list[float]) -> dict[str, float]:
    return {f"q{i:02d}": value for i, value in enumerate(scores)}


def test_identical_adapters_give_the_change_over_questions_and_different_ones_widen_it():
    rng = np.random.default_rng(5)
    base = rng.normal(5, 1, 30)
    ft = base + 0.5 + rng.normal(0, 0.8, 30)
    alone = paired_change(_values(base), _values(ft))
    same = seeded_change({"": _values(base)}, {"": _values(ft), "seed1": _values(ft), "seed2": _values(ft)})
    assert (same.change.diff_low, same.change.diff_high) == pytest.approx((alone.diff_low, alone.diff_high))
    assert same.n_seeds == 3 and same.seed_share == 0.0
    # three adapters that land 0.3 points apart: the interval now carries the seeds' variance
    spread = {"": _values(ft - 0.3), "seed1": _values(ft), "seed2": _values(ft + 0.3)}
    found = seeded_change({"": _values(base)}, spread)
    assert found.change.diff == pytest.approx(alone.diff)
    question_part = ((alone.diff_high - alone.diff_low) / (2 * 2.045229642132703)) ** 2  # t(0.975, 29)
    seed_part = 0.09 / 3  # seed means 0.3 apart: variance 0.09, over 3 seeds, no interaction
    assert found.seed_share == pytest.approx(seed_part / (question_part + seed_part))
    assert found.change.diff_high - found.change.diff_low > 1.5 * (alone.diff_high - alone.diff_low)
    assert alone.diff_low > 0 and 0.05 < found.p < 1  # settled for this adapter, not for a seed drawn at random


def test_a_summary_of_three_adapters_shows_their_spread_and_widens_the_ft_change():
    rows = []
    rng = np.random.default_rng(2)
    for q in range(20):
        level = float(rng.integers(3, 8))
        for judge in ("j1", "j2"):
            rows.append(ScoreRow("m", "base", f"q{q:02d}", judge, level))
            for name, gain in (("m", 0.5), ("m@seed1", 1.5), ("m@seed2", 2.5)):
                rows.append(ScoreRow(name, "ft", f"q{q:02d}", judge, level + gain + float(rng.integers(-1, 2))))
    summary = summarize(rows, n_resamples=200, n_permutations=200)
    (spread,) = summary.adapter_spreads
    assert (spread.model, spread.arm, sorted(spread.levels)) == ("m", "ft", ["", "seed1", "seed2"])
    assert spread.changes["seed2"] - spread.changes[""] == pytest.approx(2.0, abs=0.5) and spread.sd_levels > 0.5
    ft = next(c for c in summary.panel_cells if c.arm == "ft")
    only_first = summarize([r for r in rows if "@" not in r.model], n_resamples=200, n_permutations=200)
    first = next(c for c in only_first.panel_cells if c.arm == "ft")
    assert ft.diff_vs_base_high - ft.diff_vs_base_low > 2 * (first.diff_vs_base_high - first.diff_vs_base_low)
    (comparison,) = summary.comparisons
    assert comparison.n_seeds == 3 and comparison.permutation_p > only_first.comparisons[0].permutation_p
    assert summary.settings["seeds"].startswith("3 adapters per model") and math.isfinite(ft.diff_vs_base)
