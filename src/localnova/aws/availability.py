"""Where Bedrock offers what this study needs, and the Nova hyperparameter bounds.

Read from the AWS documentation on the dates below; AWS widens these lists over time, so a
refusal names its source and the date it was read; update the tables here when AWS adds a
region.

All read on 2026-11-25:
- Fine-tuning (customization job): Nova Micro, Lite, Pro (`amazon.nova-*-v1:0:<ctx>`) in
  us-east-1. Source: docs.aws.amazon.com/bedrock/latest/userguide/custom-model-fine-tuning.html
  ("Single-region model support").
- On-demand custom model deployment (CreateCustomModelDeployment): Nova Micro, Lite, Pro,
  customized on or after 2025-07-16, in us-east-1 and us-west-2. Source:
  docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html (one version
  lists only us-east-1).
- Provisioned throughput for custom Nova models: Nova Micro, Lite, Pro in us-east-1 (where the
  custom model lives). Source: docs.aws.amazon.com/nova/latest/userguide/customization.html.
- Hyperparameters: epochCount 1-5 (default 2), learningRate 1e-6..1e-4 (1e-5),
  learningRateWarmupSteps 0-100 (10): "the following three hyperparameters" of
  docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html (re-read 2026-11-26). That
  page lists no batchSize for Nova, so the job's request carries none; a blog post says the
  batch size is fixed at 1
  (aws.amazon.com/blogs/machine-learning/cost-efficient-custom-text-to-sql-using-amazon-nova-micro-and-amazon-bedrock-on-demand-inference),
  so finetune.batch_size must still say 1 for the `nova` preset, to keep local runs comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

from localnova.errors import UserError

READ_ON = "2026-11-25"
NOVA_FAMILIES = ("nova-micro", "nova-lite", "nova-pro")

CUSTOMIZATION_REGIONS = {family: ("us-east-1",) for family in NOVA_FAMILIES}
ON_DEMAND_DEPLOYMENT_REGIONS = {family: ("us-east-1", "us-west-2") for family in NOVA_FAMILIES}
PROVISIONED_REGIONS = {family: ("us-east-1",) for family in NOVA_FAMILIES}

SOURCES = {
    "customization": "https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-fine-tuning.html",
    "on_demand": "https://docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html",
    "provisioned": "https://docs.aws.amazon.com/nova/latest/userguide/customization.html",
    "hyperparameters": "https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html",
}


@dataclass(frozen=True)
class Bound:
    """One Nova hyperparameter's documented range: the one definition that the local `nova`
    preset (finetune/presets.py) and the customization job's request both check."""

    api_name: str  # the key in hyperParameters
    field: str  # the FinetuneConfig field that sets it
    low: float
    high: float
    note: str = ""
    sent: bool = True  # False: checked in the config, never sent in hyperParameters

    @property
    def config_key(self) -> str:
        return f"finetune.{self.field}"

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


NOVA_HYPERPARAMETER_BOUNDS = (
    Bound("epochCount", "epochs", 1, 5),
    Bound("batchSize", "batch_size", 1, 1, "Bedrock fixes the batch size at 1; not a Nova hyperparameter", sent=False),
    Bound("learningRate", "learning_rate", 1e-6, 1e-4),
    Bound("learningRateWarmupSteps", "warmup_steps", 0, 100),
)


def nova_family(model_id: str) -> str | None:
    """'nova-micro' for 'us.amazon.nova-micro-v1:0', 'amazon.nova-micro-v1:0:128k', ...; None otherwise."""
    for family in NOVA_FAMILIES:
        if f"amazon.{family}-" in model_id:
            return family
    return None


def check_customization_offered(base_model_id: str, region: str, where: str) -> None:
    family = nova_family(base_model_id)
    if family is None:
        raise UserError(f"{where}: {base_model_id!r} is not a Nova model this tool can customize (Nova Micro, Lite, Pro)")
    regions = CUSTOMIZATION_REGIONS[family]
    if region not in regions:
        raise UserError(
            f"bedrock.region: Nova customization of {family} is offered in {', '.join(regions)}, not {region} "
            f"(source: {SOURCES['customization']}, read {READ_ON})"
        )


def check_hosting_offered(hosting: str, base_model_id: str, region: str) -> None:
    """Refuse, before anything is created, a hosting choice the region or model doesn't offer."""
    family = nova_family(base_model_id)
    table = ON_DEMAND_DEPLOYMENT_REGIONS if hosting == "on_demand" else PROVISIONED_REGIONS
    what = "on-demand custom model deployment" if hosting == "on_demand" else "provisioned throughput for custom models"
    if family is None or region not in table.get(family, ()):
        offered = ", ".join(table.get(family, ())) if family else "no region for this model"
        raise UserError(
            f"bedrock.hosting: {what} of {base_model_id} is not offered in {region} (offered: {offered}; "
            f"source: {SOURCES['on_demand' if hosting == 'on_demand' else 'provisioned']}, read {READ_ON})"
        )


def nova_hyperparameters(epochs: int, batch_size: int, learning_rate: float, warmup_steps: int) -> dict[str, str]:
    """The hyperParameters of a Nova customization job, checked against the bounds, as the
    strings the API expects: only the three that AWS documents for Nova."""
    values = {"epochCount": epochs, "batchSize": batch_size, "learningRate": learning_rate, "learningRateWarmupSteps": warmup_steps}
    for bound in NOVA_HYPERPARAMETER_BOUNDS:
        value = values[bound.api_name]
        if not bound.holds(value):
            span = f"{bound.low:g}" if bound.low == bound.high else f"{bound.low:g} to {bound.high:g}"
            raise UserError(f"{bound.config_key}: {value:g} is outside what Bedrock allows for Nova ({span}; {SOURCES['hyperparameters']})")
    return {
        "epochCount": str(int(epochs)),
        "learningRate": f"{learning_rate:g}",
        "learningRateWarmupSteps": str(int(warmup_steps)),
    }
