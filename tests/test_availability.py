"""Where Bedrock offers Nova customization and hosting, and the Nova hyperparameter bounds,
which the customization request and the local `nova` preset share."""

from __future__ import annotations

import pytest

from localnova.aws.availability import (
    NOVA_HYPERPARAMETER_BOUNDS,
    SOURCES,
    check_customization_offered,
    check_hosting_offered,
    nova_family,
    nova_hyperparameters,
)
from localnova.config import FinetuneConfig
from localnova.errors import UserError
from localnova.finetune.presets import check_hyperparameters

NOVA_DEFAULTS = {"epochs": 2, "batch_size": 1, "learning_rate": 1e-5, "warmup_steps": 10}


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("us.amazon.nova-micro-v1:0", "nova-micro"),
        ("amazon.nova-micro-v1:0:128k", "nova-micro"),
        ("amazon.nova-lite-v1:0", "nova-lite"),
        ("eu.amazon.nova-lite-v1:0", "nova-lite"),
        ("amazon.nova-pro-v1:0:300k", "nova-pro"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", None),
        ("meta.llama3-8b-instruct-v1:0", None),
    ],
)
def test_nova_family_of_model_ids(model_id, family):
    assert nova_family(model_id) == family


def test_customization_is_offered_in_us_east_1():
    check_customization_offered("amazon.nova-micro-v1:0:128k", "us-east-1", "models.0")


def test_customization_in_another_region_names_the_key_and_the_source():
    with pytest.raises(UserError) as error:
        check_customization_offered("amazon.nova-micro-v1:0:128k", "eu-west-1", "models.0")
    message = str(error.value)
    assert message.startswith("bedrock.region:")
    assert "eu-west-1" in message and "us-east-1" in message
    assert SOURCES["customization"] in message


def test_customization_of_a_non_nova_model_names_where_it_was_asked():
    with pytest.raises(UserError, match=r"^models\.0\.customization_model: .*not a Nova model"):
        check_customization_offered("anthropic.claude-3-5-sonnet-20240620-v1:0", "us-east-1", "models.0.customization_model")


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2"])
def test_on_demand_hosting_is_offered_in_its_regions(region):
    check_hosting_offered("on_demand", "amazon.nova-lite-v1:0:300k", region)


def test_provisioned_hosting_is_offered_in_us_east_1():
    check_hosting_offered("provisioned", "amazon.nova-pro-v1:0:300k", "us-east-1")


@pytest.mark.parametrize(
    ("hosting", "region", "source"),
    [("on_demand", "eu-west-1", "on_demand"), ("provisioned", "us-west-2", "provisioned"), ("provisioned", "eu-west-1", "provisioned")],
)
def test_hosting_refused_where_not_offered_names_the_key_and_the_source(hosting, region, source):
    with pytest.raises(UserError) as error:
        check_hosting_offered(hosting, "amazon.nova-micro-v1:0:128k", region)
    message = str(error.value)
    assert message.startswith("bedrock.hosting:")
    assert region in message and "us-east-1" in message
    assert SOURCES[source] in message


@pytest.mark.parametrize("hosting", ["on_demand", "provisioned"])
def test_hosting_of_a_non_nova_model_is_refused(hosting):
    with pytest.raises(UserError, match="bedrock.hosting:.*no region for this model"):
        check_hosting_offered(hosting, "meta.llama3-8b-instruct-v1:0", "us-east-1")


def test_nova_hyperparameters_are_the_strings_the_api_expects():
    # only the three AWS documents for Nova (cm-hp-nova-mm): no batchSize
    assert nova_hyperparameters(**NOVA_DEFAULTS) == {
        "epochCount": "2",
        "learningRate": "1e-05",
        "learningRateWarmupSteps": "10",
    }
    assert nova_hyperparameters(epochs=5, batch_size=1, learning_rate=1e-4, warmup_steps=0) == {
        "epochCount": "5",
        "learningRate": "0.0001",
        "learningRateWarmupSteps": "0",
    }


def _probes():
    """(bound, value, inside) at low - epsilon, low, high and high + epsilon of every bound:
    epsilon is one step for the integer settings, a tenth of the bound for the learning rate."""
    for bound in NOVA_HYPERPARAMETER_BOUNDS:
        integer = bound.field != "learning_rate"
        low_step, high_step = (1, 1) if integer else (bound.low / 10, bound.high / 10)
        for value, inside in ((bound.low - low_step, False), (bound.low, True), (bound.high, True), (bound.high + high_step, False)):
            yield pytest.param(bound, value, inside, id=f"{bound.field}={value:g}")


@pytest.mark.parametrize(("bound", "value", "inside"), list(_probes()))
def test_nova_hyperparameters_refuse_values_outside_each_bound_naming_the_config_key(bound, value, inside):
    settings = {**NOVA_DEFAULTS, bound.field: value}
    if inside:
        assert (bound.api_name in nova_hyperparameters(**settings)) == bound.sent
    else:
        with pytest.raises(UserError, match=rf"^{bound.config_key}: "):
            nova_hyperparameters(**settings)


@pytest.mark.parametrize(("bound", "value", "inside"), list(_probes()))
def test_local_nova_preset_refuses_exactly_what_bedrock_refuses(bound, value, inside):
    settings = {**NOVA_DEFAULTS, bound.field: value}
    # model_copy skips the schema's own checks (epochs > 0, ...), so this is the preset's check alone.
    config = FinetuneConfig(preset="nova", **NOVA_DEFAULTS).model_copy(update={bound.field: value})

    def refused(check) -> bool:
        try:
            check()
        except UserError:
            return True
        return False

    local = refused(lambda: check_hyperparameters(config))
    bedrock = refused(lambda: nova_hyperparameters(**settings))
    assert local == bedrock == (not inside)
    if not inside:
        with pytest.raises(UserError, match=rf"^{bound.config_key}="):
            check_hyperparameters(config)


def test_free_preset_accepts_what_the_nova_preset_refuses():
    config = FinetuneConfig(preset="free", epochs=10, batch_size=8, learning_rate=2e-4, warmup_steps=500)
    check_hyperparameters(config)
    with pytest.raises(UserError, match=r"^finetune\.epochs="):
        check_hyperparameters(config.model_copy(update={"preset": "nova"}))
