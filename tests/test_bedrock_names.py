"""Resource names: hash first, cleaned to each operation's pattern and length as botocore's
service model states them, so no study or model name can make two resources collide."""

from __future__ import annotations

import re

import pytest

botocore_session = pytest.importorskip("botocore.session")

from localnova.aws.names import NAME_LIMITS, clean_name, resource_name  # noqa: E402

ODD_NAMES = [
    ("nova.v2", "nova-micro"),
    ("a" * 40, "nova-micro"),
    ("a" * 40, "nova-lite"),
    ("my study--with__odd   chars!", "Nova Micro (128k)"),
    ("x" * 120, "y" * 120),
    ("-leading", "trailing-"),
]


def _member(service: str, operation: str, member: str):
    shape = botocore_session.get_session().get_service_model(service).operation_model(operation).input_shape.members[member]
    return shape.metadata


@pytest.mark.parametrize("limit_key", sorted(NAME_LIMITS))
def test_every_name_fits_the_operations_pattern_and_length(limit_key):
    meta = _member(*limit_key)
    assert NAME_LIMITS[limit_key] == meta.get("max", NAME_LIMITS[limit_key])
    for study, model in ODD_NAMES:
        name = resource_name(limit_key, {"study": study, "model": model}, study, model)
        assert re.fullmatch(meta["pattern"], name), (limit_key, name)
        assert len(name) <= meta.get("max", 100)  # the Knowledge Base patterns cap at 100 themselves


def test_long_study_names_keep_their_hash_and_stay_distinct():
    key = ("bedrock", "CreateModelCustomizationJob", "jobName")
    study = "a-study-name-long-enough-to-push-everything-else-past-the-limit"
    micro = resource_name(key, {"study": study, "model": "nova-micro"}, study, "nova-micro")
    lite = resource_name(key, {"study": study, "model": "nova-lite"}, study, "nova-lite")
    assert micro != lite and len(micro) == len(lite) == 63


def test_clean_name_joins_with_single_hyphens():
    assert clean_name("nova.v2--x__y", 100) == "nova-v2-x-y"
    assert clean_name("abc-def", 4) == "abc"
