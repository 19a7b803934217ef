"""The backend registry: the one list of backend names and where each lives.

Backends are imported only when asked for, so `localnova --help` and `localnova report` never
import torch, vllm or boto3.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from localnova.errors import UserError

if TYPE_CHECKING:
    from localnova.backends.base import Backend
    from localnova.config import ModelConfig

# name -> "module:class". config.ModelConfig.backend lists the same names (a test checks).
BACKENDS: dict[str, str] = {
    "transformers": "localnova.backends.transformers_backend:TransformersBackend",
    "vllm": "localnova.backends.vllm_backend:VLLMBackend",
    "openai": "localnova.backends.openai_backend:OpenAIBackend",
    "bedrock": "localnova.backends.bedrock_backend:BedrockBackend",
    "simulated": "localnova.backends.simulated:SimulatedBackend",
}


def create_backend(model: "ModelConfig", adapter_path: str | None = None) -> "Backend":
    """Build the backend that `model.backend` names, loading `model.model` (and an adapter)."""
    if model.backend not in BACKENDS:
        close = difflib.get_close_matches(model.backend, list(BACKENDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown backend {model.backend!r}{hint}; known: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[model.backend].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(model, adapter_path=adapter_path)
