"""Cost estimates: the dated price file, both hosting totals, the budget checks, real spend."""

from __future__ import annotations

import pytest

from bedrock_fixtures import study_config
from localnova import costs
from localnova.backends import simulated
from localnova.budget import SpendGuard, check_budget
from localnova.config import ModelConfig
from localnova.costs import (
    CostTable,
    TokenCounts,
    Usage,
    check_every_cost_priced,
    count_tokens_estimate,
    estimate_costs,
    format_cost_table,
    load_prices,
    price_key,
    spend_from_usage,
)
from localnova.errors import UserError
from localnova.types import ChatRequest, GenerationParams


def test_every_price_has_a_source_and_a_date():
    prices = load_prices()
    entries = (
        list(prices.data["models"].values())
        + list(prices.data["customization"].values())
        + list(prices.data["hosting"]["provisioned_per_unit_hour"].values())
    )
    for entry in entries:
        assert entry["source"] and entry["read_on"]
        assert "verified" in entry
        if not entry["verified"]:
            assert entry.get("note") or entry["source"].startswith("same")


def test_price_keys_strip_profiles_and_context_suffixes():
    assert price_key("us.amazon.nova-micro-v1:0") == "amazon.nova-micro-v1:0"
    assert price_key("amazon.nova-lite-v1:0:300k") == "amazon.nova-lite-v1:0"
    assert price_key("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0") == "amazon.titan-embed-text-v2:0"


def _counts() -> TokenCounts:
    counts = TokenCounts(corpus_tokens=20_000, retrieval_query_tokens=200, training_tokens=100_000)
    for arm in ("base", "rag", "ft", "ft_rag"):
        counts.answers[("nova-micro", arm)] = Usage(10, 10_000, 5_000)
    counts.judges["claude"] = Usage(70, 70_000, 14_000)
    return counts


def test_estimate_has_every_step_and_both_hosting_choices(tmp_path):
    config = study_config(tmp_path)
    table = estimate_costs(config, _counts())
    steps = {line.step for line in table.lines}
    assert {"answers", "judges", "knowledge base", "training", "storage", "hosting"} <= steps
    # training: 100k tokens x 2 epochs at $0.001 per 1k
    assert any(line.step == "training" and line.cost_usd == pytest.approx(0.2) for line in table.lines)
    totals = table.totals()
    assert totals["provisioned"] > totals["on_demand"] + 50  # an hour of a model unit dwarfs the tokens
    assert "TOTAL" in format_cost_table(table)


def test_budget_lower_than_estimate_is_one_user_error(tmp_path):
    table = estimate_costs(study_config(tmp_path), _counts())
    with pytest.raises(UserError, match="bedrock.budget_usd"):
        check_budget(table, budget_usd=0.01)
    check_budget(table, budget_usd=1000)


def test_spend_guard_stops_before_the_step_that_would_exceed():
    guard = SpendGuard(budget_usd=5.0)
    guard.before("answers", 3.0)
    guard.add(3.0)
    with pytest.raises(UserError, match="stopping before training"):
        guard.before("training", 2.5)


def test_real_spend_from_usage():
    total, unpriced = spend_from_usage([("us.amazon.nova-micro-v1:0", 1000, 1000), ("some.unknown-model", 5, 5)])
    assert total == pytest.approx(0.000035 + 0.00014)
    assert unpriced == ["some.unknown-model"]


def test_token_estimate_is_about_four_characters():
    assert count_tokens_estimate("a" * 400) == 100
    assert count_tokens_estimate("") == 0
    assert isinstance(CostTable([], "x").total("on_demand"), float)


def test_token_estimate_is_zero_for_empty_text_and_at_least_one_otherwise():
    # Empty text is 0 tokens, so summing the fields of a request (an empty system prompt, an
    # empty answer) adds nothing for them; any character at all is at least one token.
    assert count_tokens_estimate("") == 0
    assert count_tokens_estimate("a") == 1
    assert count_tokens_estimate("ab") == 1
    assert count_tokens_estimate("abcdef") == 2
    assert count_tokens_estimate("a" * 401) == 100


def test_simulated_backend_counts_tokens_with_the_one_shared_estimate():
    assert simulated.count_tokens_estimate is costs.count_tokens_estimate
    assert simulated.CHARS_PER_TOKEN is costs.CHARS_PER_TOKEN
    assert not hasattr(simulated, "estimate_tokens")
    backend = simulated.SimulatedBackend(ModelConfig(name="sim", backend="simulated", model="sim-model"))
    messages = (("system", ""), ("user", "The pump is red and weighs twelve kilograms. Question: What colour is the pump?"))
    answered, empty = backend.generate(
        [
            ChatRequest(messages, GenerationParams(max_new_tokens=64)),
            ChatRequest(messages, GenerationParams(max_new_tokens=0)),  # the reply is cut to nothing
        ]
    )
    assert answered.text and answered.output_tokens == count_tokens_estimate(answered.text)
    assert answered.input_tokens == sum(count_tokens_estimate(content) + 4 for _, content in messages)
    assert empty.text == "" and empty.output_tokens == 0


def test_every_billable_line_names_its_config_key_and_a_missing_price_stops_the_estimate(tmp_path):
    from localnova.costs import check_every_cost_priced

    config = study_config(tmp_path)
    opus = "anthropic.claude-opus-4-1-20250805-v1:0"  # not in the price file
    judge = config.judges[0].model_copy(update={"model": config.judges[0].model.model_copy(update={"model": opus})})
    config = config.model_copy(update={"judges": [judge]})
    table = estimate_costs(config, _counts())
    [missing] = table.unpriced("on_demand")
    assert (missing.config_key, missing.model_id, missing.cost_usd) == ("judges[0].model.model", opus, None)
    with pytest.raises(UserError, match=r"^judges\[0\]\.model\.model: anthropic.claude-opus-4-1-20250805-v1:0 has no price"):
        check_every_cost_priced(table, "on_demand")
    # the config may price it: the table then shows the price as the config's
    priced = config.model_copy(
        update={"bedrock": config.bedrock.model_copy(update={"prices": {opus: {"input_per_1k": 0.015, "output_per_1k": 0.075}}})}
    )
    table = estimate_costs(priced, _counts())
    check_every_cost_priced(table, "on_demand")
    [line] = [line for line in table.lines if line.step == "judges"]
    # 70k in and 14k out tokens at $15 / $75 per million
    assert line.cost_usd == pytest.approx(70 * 0.015 + 14 * 0.075) and "price from bedrock.prices" in line.item


def test_prices_follow_the_route_called(tmp_path):
    config = study_config(tmp_path)
    judge_model = config.judges[0].model
    for model_id, per_million in (
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", (3.30, 16.50)),  # a regional profile: +10% (the price file's note)
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", (3.00, 15.00)),
    ):
        routed = config.model_copy(
            update={"judges": [config.judges[0].model_copy(update={"model": judge_model.model_copy(update={"model": model_id})})]}
        )
        [line] = [line for line in estimate_costs(routed, _counts()).lines if line.step == "judges"]
        assert line.cost_usd == pytest.approx(70 * per_million[0] / 1000 + 14 * per_million[1] / 1000)


def test_a_users_price_for_sonnet_4_5_keeps_its_regional_uplift(tmp_path):
    """bedrock.prices by the model's own id keeps the file's +10% on the us. route ($4 and $20
    per million set: $4.40 and $22 through us.); by the profile's id it prices that route only."""
    from localnova.config import TokenPrice

    base = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    book = load_prices().with_prices({base: TokenPrice(input_per_1k=0.004, output_per_1k=0.02)})
    regional = book.token_prices(f"us.{base}")
    assert (regional["input_per_1k"], regional["output_per_1k"]) == pytest.approx((0.0044, 0.022))
    assert regional["source"] == "bedrock.prices in the study config" and "+10% in" in regional["note"]
    assert (book.token_prices(f"global.{base}")["input_per_1k"], book.token_prices(base)["output_per_1k"]) == pytest.approx((0.004, 0.02))
    routed = load_prices().with_prices({f"us.{base}": TokenPrice(input_per_1k=0.005, output_per_1k=0.025)})
    assert routed.token_prices(f"us.{base}")["input_per_1k"] == pytest.approx(0.005)
    assert routed.token_prices(f"global.{base}")["input_per_1k"] == pytest.approx(0.003)  # the file's, untouched


def _vector_store(config, **keys):
    kb = {k: v for k, v in config.bedrock.knowledge_base.items() if k != "vector_store_billed_elsewhere"} | keys
    return config.model_copy(update={"bedrock": config.bedrock.model_copy(update={"knowledge_base": kb})})


def test_the_vector_store_is_unpriced_unless_the_config_prices_it_or_bills_it_elsewhere(tmp_path):
    unpriced = _vector_store(study_config(tmp_path))
    table = estimate_costs(unpriced, _counts())
    [line] = [line for line in table.lines if "vector store" in line.item]
    assert line.cost_usd is None
    with pytest.raises(
        UserError, match=r"^bedrock\.knowledge_base\.vector_store_usd_per_month: the vector store \(OPENSEARCH_SERVERLESS\)"
    ):
        check_every_cost_priced(table, "on_demand")
    priced = estimate_costs(_vector_store(study_config(tmp_path), vector_store_usd_per_month=350.0), _counts())
    [line] = [line for line in priced.lines if "vector store" in line.item]
    assert line.cost_usd == pytest.approx(350.0)  # one month (STORAGE_MONTHS) at the config's price
    assert priced.total("on_demand") - table.total("on_demand") == pytest.approx(350.0)
    elsewhere = estimate_costs(_vector_store(study_config(tmp_path), vector_store_billed_elsewhere=True), _counts())
    [line] = [line for line in elsewhere.lines if "vector store" in line.item]
    assert line.cost_usd == 0.0 and "billed elsewhere" in line.item
    with pytest.raises(UserError, match="not both"):
        estimate_costs(_vector_store(study_config(tmp_path), vector_store_usd_per_month=1.0, vector_store_billed_elsewhere=True), _counts())


def test_the_guard_is_asked_before_the_ingestion_starts(monkeypatch, fast_tmp, boto_clients):
    """A budget that the training fits but the ingestion does not: the run stops before
    StartIngestionJob is sent, naming the ingestion (the corpus, 17 tokens at Titan V2's price)."""
    from bedrock_fake_study import Harness
    from localnova.aws.state import BedrockState
    from localnova.bedrock.knowledge_base import ensure_knowledge_base
    from localnova.budget import SpendGuard, spend_guarded

    harness = Harness(monkeypatch, fast_tmp, boto_clients, "on_demand")
    guard = SpendGuard(budget_usd=17 / 1000 * 0.00002 / 2)  # half of what the ingestion embeds
    with spend_guarded(guard), pytest.raises(UserError, match=r"stopping before ingestion of the corpus \(17 tokens embedded\)"):
        ensure_knowledge_base(harness.config, BedrockState.load(harness.config.study_dir), harness.clients(), sleep=harness.clock.advance)
    operations = [operation for _, operation in harness.account.calls]
    assert "CreateDataSource" in operations and "StartIngestionJob" not in operations
