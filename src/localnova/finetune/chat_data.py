"""Chat records as training rows: token ids from the model's chat template, and labels that
make only the assistant turns count in the loss."""

from __future__ import annotations

from localnova.errors import UserError

IGNORE_INDEX = -100  # label value that the loss skips


def tokenize_chat(tokenizer, messages: list[dict[str, str]], max_seq_length: int) -> dict[str, list[int]]:
    """Token ids of a conversation rendered by the model's chat template, and labels that are
    -100 everywhere except on the assistant turns (their text and end-of-turn tokens).

    Each assistant turn's span is found as the text between the conversation rendered up to
    the turn with the generation prompt and the conversation rendered through the turn; the
    tokens whose characters start inside a span are learned. Truncated to `max_seq_length`.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("fine-tuning needs a fast tokenizer (tokenizer.json) to find the assistant tokens")
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:turn], tokenize=False, add_generation_prompt=True) if turn else ""
        through = tokenizer.apply_chat_template(messages[: turn + 1], tokenize=False)
        if not full_text.startswith(through) or not through.startswith(before):
            raise UserError("the model's chat template does not render conversations prefix by prefix; cannot find the assistant tokens")
        spans.append((len(before), len(through)))
    # The template already holds any special tokens it wants; adding them again would double BOS.
    encoded = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])[:max_seq_length]
    offsets = list(encoded["offset_mapping"])[:max_seq_length]
    labels = [
        token_id if any(start <= char_start < end for start, end in spans) else IGNORE_INDEX
        for token_id, (char_start, _) in zip(input_ids, offsets, strict=True)
    ]
    return {"input_ids": input_ids, "labels": labels}


def build_dataset(tokenizer, records: list[dict], max_seq_length: int, what: str = "training"):
    """A datasets.Dataset of input_ids/labels; records left with no assistant token after
    truncation are dropped (they would add no loss)."""
    from datasets import Dataset

    rows = [tokenize_chat(tokenizer, record["messages"], max_seq_length) for record in records]
    rows = [row for row in rows if any(label != IGNORE_INDEX for label in row["labels"])]
    if not rows:
        raise UserError(f"no {what} record keeps an assistant token within finetune.max_seq_length={max_seq_length}")
    return Dataset.from_list(rows)
