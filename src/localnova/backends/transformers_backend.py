"""The transformers backend: batched chat generation on CPU or GPU, with an optional LoRA adapter.

Batches are left-padded so every row's prompt ends where generation starts; prompts go through
the model's own chat template. Greedy unless a temperature is set, and seeded when sampling.
The dtype comes from the hardware (optional.precision_for): fp32 on CPU (emulated bf16 is
several times slower), bf16 on a GPU that supports it, fp16 on one that does not. Stop strings
end generation as in the OpenAI API: the text is cut before the first one.
"""

from __future__ import annotations

import time
from itertools import groupby
from pathlib import Path
from typing import Any

from localnova.backends.base import Backend
from localnova.config import ModelConfig
from localnova.errors import UserError
from localnova.models import _folder_fingerprint, resolve_model
from localnova.optional import pick_precision
from localnova.types import LATENCY_BATCH_WALL, ChatRequest, GenerationParams, GenerationResult

# options read from ModelConfig.options, with their defaults
DEFAULT_OPTIONS: dict[str, Any] = {
    "dtype": "auto",  # auto: from the hardware (optional.precision_for)
    "device": None,  # default: a GPU when there is one, else the CPU
    "merge_adapter": True,  # merge a LoRA adapter into unquantised weights
}


class TransformersBackend(Backend):
    supports_logprobs = True

    def __init__(self, model: ModelConfig, adapter_path: str | None = None):
        unknown = sorted(set(model.options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise UserError(
                f"model {model.name!r}: unknown option(s) for the transformers backend: {', '.join(unknown)}; "
                f"known: {', '.join(DEFAULT_OPTIONS)}"
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = resolve_model(model.model, model.revision)
        self.resolved = resolved
        # options.device and options.dtype win; otherwise the hardware decides (optional.precision_for)
        precision = pick_precision(str(model.options.get("dtype", "auto")), "inference", model.options.get("device"))
        self.device, self.dtype = precision.device, getattr(torch, precision.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=model.revision)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(resolved.path, revision=model.revision, dtype=self.dtype)
        adapter_fingerprint = ""
        if adapter_path:
            self.model = self._load_adapter(adapter_path, merge=bool(model.options.get("merge_adapter", True)))
            adapter_fingerprint = _folder_fingerprint(Path(adapter_path))
        self.model.to(self.device).eval()
        if self.model.generation_config.pad_token_id is None:
            self.model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        self.identity = {
            "backend": "transformers",
            "model": resolved.name,
            "weights": resolved.fingerprint,
            "adapter": adapter_fingerprint,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        self._torch = torch

    def _load_adapter(self, adapter_path: str, merge: bool):
        from peft import PeftModel

        try:
            with_adapter = PeftModel.from_pretrained(self.model, adapter_path)
        except (ValueError, RuntimeError, OSError) as error:
            raise UserError(f"adapter {adapter_path} does not fit base model {self.resolved.name}: {str(error).splitlines()[0]}") from None
        # Merging LoRA into unquantised weights gives the same function and removes the
        # adapter's extra matmuls from every step; a quantised base cannot take a merge exactly.
        quantised = getattr(self.model, "is_loaded_in_4bit", False) or getattr(self.model, "is_loaded_in_8bit", False)
        return with_adapter.merge_and_unload() if merge and not quantised else with_adapter

    def _prompt_text(self, messages: list[dict[str, str]]) -> str:
        # A trailing assistant message is a prefix the model continues (prefill), which the
        # logprob judge uses to read the score distribution at a known position.
        if messages[-1]["role"] == "assistant":
            return self.tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        # Requests with different sampling settings cannot share one generate() call.
        order = sorted(range(len(requests)), key=lambda index: repr(requests[index].params))
        for params, group in groupby(order, key=lambda index: requests[index].params):
            indices = list(group)
            for index, result in zip(indices, self._generate_group([requests[i] for i in indices], params)):
                results[index] = result
        return results  # type: ignore[return-value]

    def _generate_group(self, requests: list[ChatRequest], params: GenerationParams) -> list[GenerationResult]:
        torch = self._torch
        prompts = [self._prompt_text(r.message_dicts()) for r in requests]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = params.temperature > 0
        options = dict(max_new_tokens=params.max_new_tokens, do_sample=sampling, return_dict_in_generate=True)
        if sampling:
            options.update(temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(params.seed)
        else:
            # The model's generation_config may carry sampling defaults; greedy ignores them.
            options.update(temperature=None, top_p=None, top_k=None)
        if params.top_logprobs:
            options["output_logits"] = True
        if params.stop:
            # transformers stops a row once a stop string is complete; the text is cut below.
            options.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**batch, **options)
        latency_ms = (time.perf_counter() - started) * 1000
        prompt_length = batch["input_ids"].shape[1]
        input_tokens = batch["attention_mask"].sum(dim=1).tolist()
        stop_ids = self._stop_token_ids()
        results = []
        for row, sequence in enumerate(output.sequences):
            generated = sequence[prompt_length:].tolist()
            length = len(generated)
            stopped = False
            for position, token_id in enumerate(generated):
                if token_id in stop_ids:
                    length = position + 1  # the stop token was generated, so it counts
                    stopped = True
                    break
            text = self.tokenizer.decode(generated[:length], skip_special_tokens=True)
            cut = self._stop_string_cut(generated[:length], text, params.stop) if params.stop else None
            if cut is not None:
                # A finished row is padded, and the pad may be the end-of-sequence token: the
                # row ends with the token that completed the stop string, whatever follows.
                text, length, stopped = text[: cut[0]], cut[1], True
            if params.top_logprobs:
                top_logprobs, tokens, token_logprobs = self._logprobs(output.logits, row, generated[:length], params.top_logprobs)
            else:
                top_logprobs, tokens, token_logprobs = None, None, None
            results.append(
                GenerationResult(
                    text=text.strip(),
                    input_tokens=int(input_tokens[row]),
                    output_tokens=length,
                    latency_ms=round(latency_ms, 2),
                    latency_method=LATENCY_BATCH_WALL,
                    batch_size=len(requests),
                    finish_reason="stop" if stopped else "length",
                    top_logprobs=top_logprobs,
                    tokens=tokens,
                    token_logprobs=token_logprobs,
                )
            )
        return results

    def _stop_string_cut(self, generated: list[int], text: str, stop: tuple[str, ...]) -> tuple[int, int] | None:
        """Where the first stop string starts in `text`, and how many tokens it took to complete
        it; None when the text holds none."""
        found = [(text.find(string), string) for string in stop if string in text]
        if not found:
            return None
        start, string = min(found)
        for count in range(1, len(generated) + 1):
            if len(self.tokenizer.decode(generated[:count], skip_special_tokens=True)) >= start + len(string):
                return start, count
        return start, len(generated)

    def _stop_token_ids(self) -> set[int]:
        stop = self.model.generation_config.eos_token_id
        ids = set(stop if isinstance(stop, list) else [stop] if stop is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _logprobs(self, logits, row: int, generated: list[int], count: int) -> tuple[list[dict[str, float]], list[str], list[float]]:
        """At each generated position: the `count` most likely tokens, the token that was
        generated and its log probability (from the model's logits, before temperature)."""
        torch = self._torch
        steps, tokens, token_logprobs = [], [], []
        for step_logits, generated_id in zip(logits[: len(generated)], generated):
            logprobs = torch.log_softmax(step_logits[row].float(), dim=-1)
            values, token_ids = logprobs.topk(count)
            step: dict[str, float] = {}
            for value, token_id in zip(values.tolist(), token_ids.tolist()):
                piece = self.tokenizer.decode([token_id])
                # Two token ids can decode to the same text; their probabilities add up.
                if piece in step:
                    step[piece] = round(float(torch.logaddexp(torch.tensor(step[piece]), torch.tensor(value))), 6)
                else:
                    step[piece] = round(value, 6)
            steps.append(step)
            tokens.append(self.tokenizer.decode([generated_id]))
            token_logprobs.append(round(float(logprobs[generated_id]), 6))
        return steps, tokens, token_logprobs

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
