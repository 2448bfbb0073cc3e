"""HuggingFace transformers integration: inject a graph into a model; offline models.

    import maskgraph as mg
    model, tokenizer = mg.hf.load_model("smollm2")
    with mg.inject(model, "streaming_llm", overrides={"window_size": 256}):
        out = model.generate(**tokenizer("...", return_tensors="pt"), max_new_tokens=32)

See ``docs/huggingface.md`` for protocols, the context/question API and layer selection.
"""

from .graphed import GraphedDecoder
from .inject import Injection, Observer, inject
from .models import MODELS, ModelNotAvailableError, load_model, tiny_config, tiny_model
from .requests import PROTOCOLS
from .session import ContextSession

__all__ = [
    "MODELS",
    "PROTOCOLS",
    "ContextSession",
    "GraphedDecoder",
    "Injection",
    "ModelNotAvailableError",
    "Observer",
    "inject",
    "load_model",
    "tiny_config",
    "tiny_model",
]
