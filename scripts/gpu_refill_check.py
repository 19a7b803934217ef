"""The refill decoder on a CUDA GPU: the same greedy answers as transformers' generate (fp32),
and the output tokens/s of both decoding modes (bf16), through the study's TransformersBackend.

Weights are random (a model of SmolLM2's shape built by localnova.random_models from the shape
folder given: its config and tokenizer files), so every answer runs to the token cap: the refill
decoder's gain from rows that end early does not show here, only whether it is correct and what
it costs on a GPU.

    python scripts/gpu_refill_check.py SHAPE_DIR OUT.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from localnova.backends.transformers_backend import TransformersBackend  # noqa: E402
from localnova.config import ModelConfig  # noqa: E402
from localnova.random_models import save_random_model  # noqa: E402
from localnova.types import ChatRequest, GenerationParams  # noqa: E402


def main() -> None:
    shape, out = Path(sys.argv[1]), Path(sys.argv[2])
    model_dir = save_random_model(shape, Path(tempfile.mkdtemp(prefix="refill-check-")) / "model")
    words = "the quick brown fox jumps over the lazy dog".split()
    requests = [
        ChatRequest((("user", " ".join(words[: 3 + i % 7]) + f" question {i}?"),), GenerationParams(max_new_tokens=24 + i % 17))
        for i in range(48)
    ]
    result: dict = {"device": torch.cuda.get_device_name(0)}
    answers = {}
    for dtype in ("float32", "bfloat16"):
        for decoding in ("generate", "refill"):
            options = {"dtype": dtype, "decoding": decoding, "device": "cuda"}
            backend = TransformersBackend(ModelConfig(name="m", model=str(model_dir), options=options))
            backend.generate(requests[:8])  # load and warm up
            torch.cuda.synchronize()
            started = time.perf_counter()
            results = [r for start in range(0, len(requests), 16) for r in backend.generate(requests[start : start + 16])]
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            tokens = sum(r.output_tokens for r in results)
            answers[(dtype, decoding)] = [r.text for r in results]
            result[f"{dtype}_{decoding}"] = {
                "output_tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 1),
            }
            print(dtype, decoding, result[f"{dtype}_{decoding}"], flush=True)
            backend.close()
    for dtype in ("float32", "bfloat16"):
        same = sum(a == b for a, b in zip(answers[(dtype, "generate")], answers[(dtype, "refill")], strict=True))
        result[f"{dtype}_same_answers"] = f"{same}/{len(requests)}"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
