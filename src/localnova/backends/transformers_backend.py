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
from localnova.backends.batch_decoding import DecodedRow, RefillDecoder, supports_refill
from localnova.config import ModelConfig
from localnova.console import route_library_logs
from localnova.errors import UserError
from localnova.models import _folder_fingerprint, resolve_model
from localnova.optional import pick_precision
from localnova.types import LATENCY_BATCH_WALL, LATENCY_PER_REQUEST, ChatRequest, GenerationParams, GenerationResult

# options read from ModelConfig.options, with their defaults
DEFAULT_OPTIONS: dict[str, Any] = {
    "dtype": "auto",  # auto: from the hardware (optional.precision_for)
    "device": None,  # default: a GPU when there is one, else the CPU
    "merge_adapter": True,  # merge a LoRA adapter into unquantised weights
    "decoding": "refill",  # greedy requests: refill (batch_decoding.py) or generate (transformers' generate)
}
DECODING_MODES = ("refill", "generate")
# A generate() call given this many batches can refill the slots of finished rows; the store
# commits after each call, so a killed run loses at most this much.
BATCHES_PER_CALL = 4


class TransformersBackend(Backend):
    """Loads its model on the first generate() call, not when built: a rerun whose answers are
    all in the store never loads it. `identity` is known without loading (weights fingerprint,
    dtype, adapter fingerprint), since the store's keys need it before any call."""

    supports_logprobs = True

    def __init__(self, model: ModelConfig, adapter_path: str | None = None):
        unknown = sorted(set(model.options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise UserError(
                f"model {model.name!r}: unknown option(s) for the transformers backend: {', '.join(unknown)}; "
                f"known: {', '.join(DEFAULT_OPTIONS)}"
            )
        decoding = model.options.get("decoding", "refill")
        if decoding not in DECODING_MODES:
            raise UserError(f"model {model.name!r}: options.decoding must be one of {', '.join(DECODING_MODES)}, not {decoding!r}")
        self.config, self.adapter_path, self.decoding = model, adapter_path, decoding
        self.resolved = resolve_model(model.model, model.revision)
        # options.device and options.dtype win; otherwise the hardware decides (optional.precision_for)
        precision = pick_precision(str(model.options.get("dtype", "auto")), "inference", model.options.get("device"))
        self.device, self.dtype_name = precision.device, precision.dtype
        if adapter_path and not Path(adapter_path).is_dir():
            raise UserError(f"adapter {adapter_path}: folder not found")
        # What decides the text besides the request: the files, the dtype, and the kind of
        # device (a GPU's fp32 matmuls may round as TF32, a CPU's do not), and whether the
        # adapter is merged into the weights (W + BA rounds otherwise than W, then BA). The
        # batch a request shares moves results in the last bits too, but is no setting.
        self.identity = {
            "backend": "transformers",
            "model": self.resolved.name,
            "weights": self.resolved.fingerprint,
            "adapter": _folder_fingerprint(Path(adapter_path)) if adapter_path else "",
            "dtype": self.dtype_name,
            "device": str(self.device).split(":")[0],
        }
        if adapter_path:
            self.identity["adapter_merged"] = "yes" if model.options.get("merge_adapter", True) else "no"
        self.model = self.tokenizer = self._decoder = None

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def _load_tokenizer(self) -> None:
        if self.tokenizer is not None:
            return
        from transformers import AutoTokenizer

        route_library_logs()  # transformers' warnings to the run log, not the console
        self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.path, revision=self.resolved.revision)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM

        self._load_tokenizer()
        self._torch = torch
        # the commit the identity names (resolve_model), not a branch that may have moved since
        revision = self.resolved.revision
        self.model = AutoModelForCausalLM.from_pretrained(self.resolved.path, revision=revision, dtype=getattr(torch, self.dtype_name))
        if self.adapter_path:
            self.model = self._load_adapter(self.adapter_path, merge=bool(self.config.options.get("merge_adapter", True)))
        self.model.to(self.device).eval()
        if self.model.generation_config.pad_token_id is None:
            self.model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        if self.decoding == "refill" and supports_refill(self.model):
            self._decoder = RefillDecoder(
                self.model, self.device, self.tokenizer.pad_token_id, self._stop_token_ids(), self.config.generation.batch_size
            )

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

    def requests_per_call(self, batch_size: int) -> int:
        return batch_size * BATCHES_PER_CALL if self.decoding == "refill" else batch_size

    def can_force_first_token(self, messages: list[dict[str, str]], text: str) -> bool:
        """True when `text` is one token and the prompt with it appended to the assistant prefix
        tokenizes as the prompt without it plus that token: then forcing it computes exactly
        what prefilling it would. A tokenizer that merges it with the prefix's last token, or
        writes it as two tokens (SentencePiece's leading "▁"), gets the two requests."""
        self._load_tokenizer()
        prefilled = messages[:-1] + [{**messages[-1], "content": messages[-1]["content"] + text}]
        plain_ids, prefilled_ids = (
            self.tokenizer(self._prompt_text(m), add_special_tokens=False)["input_ids"] for m in (messages, prefilled)
        )
        token_ids = self.tokenizer.encode(text, add_special_tokens=False)
        return len(token_ids) == 1 and prefilled_ids == plain_ids + token_ids

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        self.load()
        results: list[GenerationResult | None] = [None] * len(requests)
        # Requests with different sampling settings cannot share one batch.
        order = sorted(range(len(requests)), key=lambda index: repr(requests[index].params))
        for params, group in groupby(order, key=lambda index: requests[index].params):
            indices = list(group)
            group_requests = [requests[i] for i in indices]
            if self._decoder is not None and params.temperature == 0:
                group_results = self._decode_group(group_requests, params)
            else:
                group_results = [
                    result
                    for start in range(0, len(group_requests), self.config.generation.batch_size)
                    for result in self._generate_group(group_requests[start : start + self.config.generation.batch_size], params)
                ]
            for index, result in zip(indices, group_results, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def _decode_group(self, requests: list[ChatRequest], params: GenerationParams) -> list[GenerationResult]:
        """Greedy requests through the refill decoder: every row ends on its own."""
        prompts = [self.tokenizer(self._prompt_text(r.message_dicts()), add_special_tokens=False)["input_ids"] for r in requests]
        stop_check = None
        if params.stop:

            def stop_check(token_ids: list[int]) -> bool:
                text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                return any(string in text for string in params.stop)

        first_token_id = self._single_token_id(params.first_token) if params.first_token else None
        rows = self._decoder.decode(prompts, params.max_new_tokens, params.top_logprobs, stop_check, first_token_id)
        return [
            self._result(row.token_ids, row.stopped, params, len(prompt), row.seconds * 1000, LATENCY_PER_REQUEST, 1, row)
            for prompt, row in zip(prompts, rows, strict=True)
        ]

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
        if params.first_token:
            options["logits_processor"] = [_force_first_token(batch["input_ids"].shape[1], self._single_token_id(params.first_token))]
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
            length, stopped = len(generated), False
            for position, token_id in enumerate(generated):
                if token_id in stop_ids:
                    length, stopped = position + 1, True  # the stop token was generated, so it counts
                    break
            steps = None
            if params.top_logprobs:
                steps = DecodedRow(steps=self._steps_from_logits(output.logits, row, generated[:length], params.top_logprobs))
            result = self._result(
                generated[:length], stopped, params, int(input_tokens[row]), latency_ms, LATENCY_BATCH_WALL, len(requests), steps
            )
            results.append(result)
        return results

    def _single_token_id(self, text: str) -> int:
        token_ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(token_ids) != 1:
            raise UserError(f"model {self.config.name!r}: first_token {text!r} is {len(token_ids)} tokens, not one")
        return token_ids[0]

    def _steps_from_logits(self, logits, row: int, generated: list[int], count: int) -> list[tuple[list[float], list[int], float]]:
        torch = self._torch
        steps = []
        for step_logits, generated_id in zip(logits[: len(generated)], generated, strict=True):
            logprobs = torch.log_softmax(step_logits[row].float(), dim=-1)
            values, token_ids = logprobs.topk(count)
            steps.append((values.tolist(), token_ids.tolist(), float(logprobs[generated_id])))
        return steps

    def _result(
        self,
        generated: list[int],
        stopped: bool,
        params: GenerationParams,
        input_tokens: int,
        latency_ms: float,
        latency_method: str,
        batch_size: int,
        decoded: DecodedRow | None,
    ) -> GenerationResult:
        """One request's result from its generated token ids (cut after a stop token already)."""
        length = len(generated)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        cut = self._stop_string_cut(generated, text, params.stop) if params.stop else None
        if cut is not None:
            # A finished row is padded, and the pad may be the end-of-sequence token: the
            # row ends with the token that completed the stop string, whatever follows.
            text, length, stopped = text[: cut[0]], cut[1], True
        top_logprobs = tokens = token_logprobs = None
        if params.top_logprobs and decoded is not None:
            top_logprobs, tokens, token_logprobs = self._logprobs(decoded.steps[:length], generated[:length])
        return GenerationResult(
            text=text.strip(),
            input_tokens=input_tokens,
            output_tokens=length,
            latency_ms=round(latency_ms, 2),
            latency_method=latency_method,
            batch_size=batch_size,
            finish_reason="stop" if stopped else "length",
            top_logprobs=top_logprobs,
            tokens=tokens,
            token_logprobs=token_logprobs,
        )

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

    def _logprobs(self, steps, generated: list[int]) -> tuple[list[dict[str, float]], list[str], list[float]]:
        """At each generated position: the most likely tokens as text with their log
        probabilities (from the model's logits, before temperature), the token that was
        generated and its log probability."""
        torch = self._torch
        top_steps, tokens, token_logprobs = [], [], []
        for (values, token_ids, generated_logprob), generated_id in zip(steps, generated, strict=True):
            step: dict[str, float] = {}
            for value, token_id in zip(values, token_ids, strict=True):
                piece = self.tokenizer.decode([token_id])
                # Two token ids can decode to the same text; their probabilities add up.
                if piece in step:
                    step[piece] = round(float(torch.logaddexp(torch.tensor(step[piece]), torch.tensor(value))), 6)
                else:
                    step[piece] = round(value, 6)
            top_steps.append(step)
            tokens.append(self.tokenizer.decode([generated_id]))
            token_logprobs.append(round(generated_logprob, 6))
        return top_steps, tokens, token_logprobs

    def close(self) -> None:
        """Let the model go; a backend that never loaded has nothing to release."""
        if self.model is None:
            self.tokenizer = None
            return
        self.model = self.tokenizer = self._decoder = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def _force_first_token(prompt_length: int, token_id: int):
    """A logits processor for `generate` that makes the first new token `token_id`. `generate`
    returns the raw logits (output_logits), so the step's log probabilities stay the model's."""
    import torch
    from transformers import LogitsProcessor

    class ForceFirstToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] != prompt_length:
                return scores
            forced = torch.full_like(scores, -torch.inf)
            forced[:, token_id] = 0.0
            return forced

    return ForceFirstToken()
