"""Greedy decoding with refilled batches: a finished row leaves the batch at once and a waiting
prompt takes its slot, so no step is spent on rows that have already ended.

`model.generate` decodes a batch until its longest answer ends; when answers are short against
the token cap, half of its steps serve finished rows. Here every row lives in one key/value
cache whose rows can be dropped and joined: a new group of prompts is prefilled on its own and
its cache merged in, left-padded to a common length, with an explicit attention mask and
position ids per row, so each row computes exactly what it would alone (the benchmark checks
the greedy answers against one-at-a-time). The cache is preallocated, so a decode step writes
one column instead of copying the whole cache as the default cache's concatenation does.

Prompts that share a token prefix (the judge's instructions, the answer arms' system prompt)
have it computed once: its keys and values are reused for every prompt that starts with it.

Only plain full-attention caches qualify (`supports_refill`); other models use `generate`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX_TOKENS = 16
# At most this many prompt tokens (rows x longest prompt) go through one prefill forward; the
# free slots take the rest of a group in the next ones. On 2 CPU cores, 32 prompts of 560
# tokens in one forward ran at 352 tokens/s, 2 to 16 prompts at 399-556 (scripts/bench_prefill.py).
MAX_PREFILL_TOKENS = 4096


@dataclass
class DecodedRow:
    """One prompt's generated token ids and, when asked, each step's top log probabilities."""

    token_ids: list[int] = field(default_factory=list)
    stopped: bool = False  # ended on a stop token or stop string, not on the token cap
    # per step: (top-k log probabilities, their token ids, the generated token's log probability)
    steps: list[tuple[list[float], list[int], float]] = field(default_factory=list)
    seconds: float = 0.0  # from the prefill of its group to its last token


@cache
def _rows_layer_class() -> type:
    """The cache layer class, defined on first use so that importing this module loads neither
    torch nor transformers."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class RowsLayer(DynamicLayer):
        """A cache layer over a preallocated [rows, heads, capacity, dim] buffer: a step writes one
        column and returns a view, instead of concatenating (and so copying) the whole cache."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
            super().__init__()
            self.key_buffer, self.value_buffer, self.length = keys, values, length
            self.is_initialized, self.device = True, keys.device
            self._refresh()

        def _refresh(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            new_length = self.length + key_states.shape[-2]
            if new_length > self.key_buffer.shape[-2]:
                grow = max(new_length, 2 * self.key_buffer.shape[-2]) - self.key_buffer.shape[-2]
                self.key_buffer = torch.nn.functional.pad(self.key_buffer, (0, 0, 0, grow))
                self.value_buffer = torch.nn.functional.pad(self.value_buffer, (0, 0, 0, grow))
            self.key_buffer[:, :, self.length : new_length] = key_states
            self.value_buffer[:, :, self.length : new_length] = value_states
            self.length = new_length
            self._refresh()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

    return RowsLayer


def _new_cache(layers: list | None = None) -> Any:
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    if layers is not None:
        cache.layers = layers
    return cache


def supports_refill(model) -> bool:
    """Whether the model's cache is plain full attention on every layer (no sliding window, no
    recurrent state), which is what dropping and merging rows assumes."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _prefill_group_size(lengths: list[int]) -> int:
    """How many of the next prompts (token counts `lengths`, longest first) one prefill takes:
    as many as keep rows x longest within MAX_PREFILL_TOKENS, and at least one."""
    return max(1, min(len(lengths), MAX_PREFILL_TOKENS // max(lengths[0], 1)))


def _left_pad(tensor, length: int, dim: int):
    import torch

    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RefillDecoder:
    """Greedy decoding of many prompts through `slots` rows of one batch."""

    def __init__(self, model, device: str, pad_token_id: int, stop_token_ids: set[int], slots: int):
        self.model, self.device, self.pad_token_id = model, device, pad_token_id
        self.stop_token_ids, self.slots = stop_token_ids, max(1, slots)
        # transformers 5.2x renamed the forward's `past_key_values` to `cache` (the old name warns).
        self.cache_keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._prefix: tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def decode(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        top_logprobs: int = 0,
        stop_check: Callable[[list[int]], bool] | None = None,
        first_token_id: int | None = None,
    ) -> list[DecodedRow]:
        """Greedy continuations of `prompts` (token ids), in their order. A row ends on a stop
        token (kept), on `stop_check(token_ids)` turning true, or at `max_new_tokens`. With
        `first_token_id`, every row's first token is that one instead of the model's choice."""
        rows = [DecodedRow() for _ in prompts]
        if max_new_tokens <= 0:
            return rows
        # Longest first: a long prompt joining later would widen every row's cache.
        waiting = sorted(range(len(prompts)), key=lambda index: -len(prompts[index]))
        active: list[int] = []  # row index per batch row, finished rows included until compacted
        finished: set[int] = set()
        started: dict[int, float] = {}
        layers: list = []
        mask = next_tokens = None
        # Dropping rows copies the whole cache, about what one step costs; a finished row left in
        # the batch costs 1/slots of a step. So finished rows leave in bulk: when a quarter of
        # the slots is free, or with a refill (which copies the cache anyway).
        bulk = max(1, self.slots // 4)
        import torch

        with torch.inference_mode():
            while waiting or any(index not in finished for index in active):
                running = [batch_row for batch_row, index in enumerate(active) if index not in finished]
                free = self.slots - len(running)
                if (waiting and (not running or free >= bulk)) or len(active) - len(running) >= bulk:
                    if len(running) < len(active):
                        active = [active[batch_row] for batch_row in running]
                        layers, mask = self._select(layers, mask, running)
                        next_tokens = next_tokens[running] if running else None
                    if not waiting or (running and free < bulk):
                        continue
                    # A prefill of a few prompts at a time would cost more than the idle slots.
                    size = _prefill_group_size([len(prompts[index]) for index in waiting[:free]])
                    group, waiting = waiting[:size], waiting[size:]
                    started.update(dict.fromkeys(group, time.perf_counter()))
                    group_layers, group_mask, logits = self._prefill([prompts[index] for index in group])
                    layers, mask = self._merge(layers, mask, group_layers, group_mask)
                    active += group
                    group_tokens = self._choose(logits, group, rows, top_logprobs, finished, first_token_id)
                    next_tokens = group_tokens if next_tokens is None else torch.cat([next_tokens, group_tokens])
                else:
                    position_ids = mask.sum(dim=1, keepdim=True)
                    mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
                    cache = _new_cache(layers)
                    inputs = {"input_ids": next_tokens[:, None], "attention_mask": mask, "position_ids": position_ids}
                    output = self.model(**inputs, **{self.cache_keyword: cache}, use_cache=True)
                    next_tokens = self._choose(output.logits[:, -1], active, rows, top_logprobs, finished)
                for index in active:
                    row = rows[index]
                    if index in finished:
                        continue
                    if row.token_ids[-1] in self.stop_token_ids or (stop_check is not None and stop_check(row.token_ids)):
                        row.stopped = True
                    if row.stopped or len(row.token_ids) >= max_new_tokens:
                        row.seconds = time.perf_counter() - started[index]
                        finished.add(index)
        return rows

    def _choose(
        self,
        logits: torch.Tensor,
        indices: list[int],
        rows: list[DecodedRow],
        top_logprobs: int,
        finished: set[int],
        forced_token_id: int | None = None,
    ) -> torch.Tensor:
        """The greedy next token of each batch row (as `generate` picks it: argmax of the fp32
        logits), or `forced_token_id` when given, appended to its DecodedRow (unless
        `finished`) with the step's log probabilities when asked."""
        import torch

        scores = logits.float()
        chosen = scores.argmax(dim=-1) if forced_token_id is None else torch.full_like(scores[:, 0], forced_token_id, dtype=torch.long)
        if top_logprobs:
            logprobs = torch.log_softmax(scores, dim=-1)
            values, token_ids = logprobs.topk(top_logprobs, dim=-1)
            chosen_logprobs = logprobs.gather(1, chosen[:, None])[:, 0]
        for batch_row, index in enumerate(indices):
            if index in finished:
                continue
            rows[index].token_ids.append(int(chosen[batch_row]))
            if top_logprobs:
                rows[index].steps.append((values[batch_row].tolist(), token_ids[batch_row].tolist(), float(chosen_logprobs[batch_row])))
        return chosen

    def _prefill(self, prompts: list[list[int]]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """Run a group of prompts: each layer's keys and values, the attention mask, and the last
        position's logits. Rows are laid out [shared prefix][padding][rest of the prompt]."""
        import torch

        prefix = self._shared_prefix(prompts)
        rests = [prompt[len(prefix) :] for prompt in prompts]
        width = max(len(rest) for rest in rests)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        rest_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, rest in enumerate(rests):
            input_ids[row, width - len(rest) :] = torch.tensor(rest)
            rest_mask[row, width - len(rest) :] = 1
        mask = torch.cat([torch.ones((len(prompts), len(prefix)), dtype=torch.long), rest_mask], dim=1).to(self.device)
        # Positions count real tokens only, as `generate` numbers them; padding gets 1, as there.
        position_ids = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, 1)[:, len(prefix) :]
        cache = _new_cache()
        if prefix:
            for layer_index, (keys, values) in enumerate(self._prefix_cache(prefix)):
                cache.update(keys.expand(len(prompts), -1, -1, -1), values.expand(len(prompts), -1, -1, -1), layer_index)
        output = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask,
            position_ids=position_ids,
            **{self.cache_keyword: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return [(layer.keys, layer.values) for layer in cache.layers], mask, output.logits[:, -1]

    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[int, ...]:
        """The token prefix all prompts share, leaving each at least one token of its own;
        empty when too short to be worth a forward pass."""
        shortest = min(len(prompt) for prompt in prompts) - 1
        length = 0
        first = prompts[0]
        while length < shortest and all(prompt[length] == first[length] for prompt in prompts):
            length += 1
        if self._prefix is not None and len(self._prefix[0]) <= length and tuple(first[: len(self._prefix[0])]) == self._prefix[0]:
            return self._prefix[0]  # the prefix computed before still fits: reuse it as it is
        return tuple(first[:length]) if length >= MIN_SHARED_PREFIX_TOKENS else ()

    def _prefix_cache(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        if self._prefix is None or self._prefix[0] != prefix:
            cache = _new_cache()
            prefix_ids = torch.tensor([prefix], device=self.device)
            self.model(input_ids=prefix_ids, **{self.cache_keyword: cache}, use_cache=True, logits_to_keep=1)
            self._prefix = (prefix, [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix[1]

    def _merge(self, layers: list, mask, group_layers, group_mask) -> tuple[list, torch.Tensor]:
        """The running rows and a prefilled group in one cache, each left-padded to the longer."""
        import torch

        if not layers:
            length = group_mask.shape[1]
            merged_mask = group_mask
        else:
            length = max(mask.shape[1], group_mask.shape[1])
            merged_mask = torch.cat([_left_pad(mask, length, 1), _left_pad(group_mask, length, 1)])
        merged = []
        for layer_index, (keys, values) in enumerate(group_layers):
            if layers:
                keys = torch.cat([_left_pad(layers[layer_index].keys, length, 2), _left_pad(keys, length, 2)])
                values = torch.cat([_left_pad(layers[layer_index].values, length, 2), _left_pad(values, length, 2)])
            merged.append(_rows_layer_class()(*self._with_room(keys, values), length))
        return merged, merged_mask

    def _select(self, layers: list, mask: torch.Tensor, keep: list[int]) -> tuple[list, torch.Tensor]:
        """Only the batch rows `keep`, without the leading columns that none of them uses."""
        if not keep:
            return [], None
        mask = mask[keep]
        first_used = int(mask.any(dim=0).long().argmax())
        mask = mask[:, first_used:]
        selected = []
        for layer in layers:
            keys, values = layer.keys[keep, :, first_used:], layer.values[keep, :, first_used:]
            selected.append(_rows_layer_class()(*self._with_room(keys, values), keys.shape[2]))
        return selected, mask

    def _with_room(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        # Room for a few dozen decode steps; the layer grows its buffer when a row runs longer.
        room = 64
        return torch.nn.functional.pad(keys, (0, 0, 0, room)), torch.nn.functional.pad(values, (0, 0, 0, room))
