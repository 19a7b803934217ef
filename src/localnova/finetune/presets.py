"""Hyperparameter presets for local fine-tuning.

The `nova` preset holds a local run to the bounds that an Amazon Bedrock customization job
for Nova accepts, so the same hyperparameters can be used on both paths and the local arm
stands in for the cloud one. The `free` preset accepts any positive values (the config schema
already rejects zero and negative ones).

Checked before any model or tokenizer is loaded, so a bad value costs the user no waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from localnova.errors import UserError


@dataclass(frozen=True)
class Bound:
    key: str  # the field of FinetuneConfig
    low: float
    high: float
    note: str = ""


# Bedrock's documented ranges for Nova Micro/Lite/Pro customization jobs.
NOVA_BOUNDS: tuple[Bound, ...] = (
    Bound("epochs", 1, 5),
    Bound("batch_size", 1, 1, "Bedrock fixes the batch size at 1"),
    Bound("learning_rate", 1e-6, 1e-4),
    Bound("warmup_steps", 0, 100),
)

PRESETS = ("nova", "free")


def check_hyperparameters(config) -> None:
    """Raise a UserError naming the first bound that `config` (a FinetuneConfig) breaks."""
    if config.preset not in PRESETS:
        raise UserError(f"finetune.preset={config.preset!r} is not one of {', '.join(PRESETS)}")
    if config.preset != "nova":
        return
    for bound in NOVA_BOUNDS:
        value = getattr(config, bound.key)
        if not bound.low <= value <= bound.high:
            note = f" ({bound.note})" if bound.note else ""
            raise UserError(f"finetune.{bound.key}={value} is outside the nova bound {bound.low}..{bound.high}{note}")
