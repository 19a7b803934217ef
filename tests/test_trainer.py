"""finetune/trainer.py: the speed settings (Liger kernels, padding-free batches) and the tracker,
as the finetune config turns them on; what they need is checked before any model loads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from localnova.config import FinetuneConfig
from localnova.errors import UserError
from localnova.finetune import trainer as trainer_module
from localnova.models import ResolvedModel
from localnova.optional import cuda_available, is_available

# Loading it fails loudly: a UserError raised first proves nothing was loaded.
UNLOADABLE = ResolvedModel("nowhere", "/nonexistent/model", "test", "0000")
FACT = {"messages": [{"role": "user", "content": "What colour is it?"}, {"role": "assistant", "content": "Teal."}]}


def config(**changes) -> FinetuneConfig:
    values = dict(epochs=1, batch_size=4, max_seq_length=96, lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]})
    return FinetuneConfig(**{**values, **changes})


def test_the_settings_are_off_unless_the_config_turns_them_on():
    default = config()
    assert (default.liger_kernels, default.padding_free, default.report_to) == (False, False, [])
    with pytest.raises(ValidationError, match="report_to"):
        FinetuneConfig(report_to=["comet"])  # only the trackers the Trainer integration is wired for


def test_speed_settings_join_the_adapter_key_only_when_on():
    """Adapters trained before the settings existed keep their reuse key; an adapter trained
    with a setting on is not reused for a run without it (other kernels, other rounding)."""
    plain = trainer_module.training_settings(config())
    assert "liger_kernels" not in plain and "padding_free" not in plain
    assert trainer_module.training_settings(config(padding_free=True)) == {**plain, "padding_free": True}
    assert trainer_module.training_settings(config(liger_kernels=True)) == {**plain, "liger_kernels": True}
    assert trainer_module.training_settings(config(report_to=["tensorboard"])) == plain  # metrics change no weight


@pytest.mark.skipif(cuda_available(), reason="checks the CPU refusal")
def test_liger_kernels_on_cpu_stop_before_loading(tmp_path):
    from localnova.finetune.lora import train_adapter

    with pytest.raises(UserError, match="liger_kernels=true needs a CUDA GPU"):
        train_adapter(UNLOADABLE, [FACT], None, config(liger_kernels=True), tmp_path / "adapter", seed=0)


def test_liger_kernels_without_the_package_name_what_to_install(monkeypatch):
    from localnova.finetune import trainer

    monkeypatch.setattr(trainer, "require", _require_without({"liger_kernel"}))
    with pytest.raises(UserError, match="liger-kernel"):
        trainer.check_trainer_settings(config(liger_kernels=True), on_cuda=True)


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_without_its_package_stops_before_loading(monkeypatch, tracker):
    from localnova.finetune import trainer

    monkeypatch.setattr(trainer, "require", _require_without({tracker}))
    with pytest.raises(UserError, match=f"finetune.report_to: {tracker} needs the package '{tracker}'"):
        trainer.check_trainer_settings(config(report_to=[tracker]), on_cuda=False)


def _require_without(missing: set[str]):
    from localnova.optional import INSTALL_HINTS

    def require(package: str, feature: str) -> None:
        if package in missing:
            raise UserError(f"{feature} needs the package {package!r}: {INSTALL_HINTS.get(package, package)}")

    return require


@pytest.fixture(scope="module")
def smollm2():
    from localnova.finetune.lora import choose_precision, load_base
    from localnova.models import resolve_model

    return load_base(resolve_model("smollm2-135m-instruct"), config(), choose_precision(config()))


def _records(count: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question number {n} about the pump?"},
                {"role": "assistant", "content": " ".join(["litres"] * (1 + 7 * n % 23))},
            ]
        }
        for n in range(count)
    ]


@pytest.mark.slow
def test_packed_rows_attend_only_within_themselves_on_sdpa(smollm2, tmp_path):
    """Padding-free batches on the attention CPUs and most GPUs run (sdpa, not FlashAttention):
    the collator's packed row, sent as TRL's compute_loss sends it (use_cache=False), gives each
    row the logits it gets alone, position by position. Were the rows to attend to each other,
    every row after the first would differ. transformers finds the rows from position_ids and
    builds a block mask only without a cache: with one (use_cache=True, the config's default
    outside the Trainer) the second row's logits move, which the last assert shows, so what
    holds the claim up is TRL's use_cache=False."""
    import torch

    from localnova.finetune.chat_data import build_dataset
    from localnova.finetune.lora import choose_precision

    tokenizer, model = smollm2
    assert model.config._attn_implementation == "sdpa"
    rows = list(build_dataset(tokenizer, _records(3), 96))
    settings = config(padding_free=True)
    trainer = trainer_module.build_trainer(
        model, tokenizer, build_dataset(tokenizer, _records(3), 96), None, settings, choose_precision(settings), tmp_path, 0
    )
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
        alone = [model(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits[0] for row in rows]
    start, gaps, cached_gaps = 0, [], []
    for row_logits in alone:
        end = start + row_logits.shape[0]
        gaps.append(float((packed[start:end] - row_logits).abs().max()))
        cached_gaps.append(float((cached[start:end] - row_logits).abs().max()))
        start = end
    assert start == packed.shape[0] and len(rows) == 3
    assert max(gaps) < 1e-3, gaps
    assert min(cached_gaps[1:]) > 1e-2, cached_gaps  # with a cache the later rows see the earlier ones


@pytest.mark.slow
def test_padding_free_batches_hold_no_padding_and_give_the_padded_loss(smollm2, tmp_path):
    """Rows of very different lengths: padded, a batch is as wide as its longest row; padding-
    free, the rows lie end to end with their own positions and no token is padding. The loss
    over the assistant tokens is the same either way (attention stays within each row), which
    the padded batch computes with an ordinary attention mask."""
    import torch

    from localnova.finetune.chat_data import build_dataset
    from localnova.finetune.lora import choose_precision

    tokenizer, model = smollm2
    rows = list(build_dataset(tokenizer, _records(4), 96))
    losses, shapes = {}, {}
    for padding_free in (False, True):
        settings = config(padding_free=padding_free)
        trainer = trainer_module.build_trainer(
            model,
            tokenizer,
            build_dataset(tokenizer, _records(4), 96),
            None,
            settings,
            choose_precision(settings),
            tmp_path / str(padding_free),
            0,
        )
        batch = trainer.data_collator(rows)
        shapes[padding_free] = tuple(batch["input_ids"].shape)
        if padding_free:
            assert "attention_mask" not in batch
            starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
            assert starts == [0] + list(torch.tensor([len(r["input_ids"]) for r in rows]).cumsum(0)[:-1].tolist())
        with torch.no_grad():
            losses[padding_free] = model(
                **{k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "position_ids")}
            ).loss
    lengths = [len(row["input_ids"]) for row in rows]
    assert shapes[False] == (4, max(lengths)) and shapes[True] == (1, sum(lengths))
    assert sum(lengths) < 4 * max(lengths)  # the padding the padded batch computes for nothing
    assert torch.allclose(losses[True], losses[False], atol=1e-4), (losses[True], losses[False])


@pytest.mark.slow
@pytest.mark.skipif(not is_available("tensorboard"), reason="needs the tensorboard package")
def test_tensorboard_gets_the_training_metrics_beside_the_adapter(tmp_path):
    from localnova.finetune.lora import train_adapter
    from localnova.models import resolve_model

    base = resolve_model("smollm2-135m-instruct")
    info = train_adapter(base, [FACT] * 4, None, config(batch_size=2, report_to=["tensorboard"]), tmp_path / "adapter", seed=0, max_steps=2)
    events = list((tmp_path / "tensorboard" / "adapter").rglob("events.out.tfevents.*"))
    assert events and info.loss_curve
