"""Hyperparameter presets for local fine-tuning.

The `nova` preset holds a local run to the bounds that an Amazon Bedrock customization job
for Nova accepts, so the same hyperparameters can be used on both paths and the local arm
stands in for the cloud one. The `free` preset accepts any positive values (the config schema
already rejects zero and negative ones).

Checked before any model or tokenizer is loaded, so a bad value costs the user no waiting.
"""

from __future__ import annotations

from typing import get_args

from localnova.aws.availability import NOVA_HYPERPARAMETER_BOUNDS
from localnova.config import FinetuneConfig, Preset
from localnova.errors import UserError

PRESETS = get_args(Preset)


def check_hyperparameters(config: FinetuneConfig) -> None:
    """Raise a UserError naming the first bound that `config` (a FinetuneConfig) breaks."""
    if config.preset not in PRESETS:
        raise UserError(f"finetune.preset={config.preset!r} is not one of {', '.join(PRESETS)}")
    if config.preset != "nova":
        return
    for bound in NOVA_HYPERPARAMETER_BOUNDS:
        value = getattr(config, bound.field)
        if not bound.holds(value):
            note = f" ({bound.note})" if bound.note else ""
            raise UserError(f"{bound.config_key}={value} is outside the nova bound {bound.low}..{bound.high}{note}")
