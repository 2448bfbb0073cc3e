"""``model.generate`` with transformers' static-cache recipe inside ``mg.inject``.

On a GPU, ``generate(..., cache_implementation="static")`` compiles the decode steps itself
(``torch.compile`` with CUDA graphs). Here the same compiled path runs on the CPU: every decode
step is traced with ``fullgraph=True``, which fails on any graph break (a value read on the
host, an untraceable lookup), and the tokens must equal the uncompiled injected generation.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.configuration_utils import CompileConfig

import maskgraph as mg

OVERRIDES = {
    "streaming_llm": {"sink_size": 4, "window_size": 16},
    "oracle_topk": {"sink_size": 4, "window_size": 8, "heavy_size": 0.2},
    "pqcache": {"sink_size": 4, "window_size": 8, "heavy_size": 0.2},
}


def tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=256,
        max_position_embeddings=512,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def fullgraph_everywhere() -> CompileConfig:
    config = CompileConfig(fullgraph=True, backend="eager", dynamic=False)
    config._compile_all_devices = True  # transformers compiles only on accelerators by default
    return config


@pytest.mark.parametrize(
    "graph, protocol",
    # stateless; estimator state built by a dense prefill; estimator state built by the graph
    # (tracing whole decode steps is the point and takes minutes: one case in the default run)
    [
        ("streaming_llm", "dense_prefill"),
        pytest.param("pqcache", "dense_prefill", marks=pytest.mark.slow),
        pytest.param("oracle_topk", "sparse", marks=pytest.mark.slow),
    ],
)
def test_static_cache_recipe_compiles_whole_decode_steps(graph, protocol):
    torch._dynamo.reset()
    model = tiny_llama()
    ids = torch.randint(1, 256, (1, 80), generator=torch.Generator().manual_seed(1))
    kwargs = dict(max_new_tokens=6, do_sample=False, cache_implementation="static")
    with mg.inject(model, graph, mode="sparse", protocol=protocol, overrides=OVERRIDES[graph]) as injection:
        eager = model.generate(ids, **kwargs, disable_compile=True)
        assert injection.static_calls > 0  # the graph reads the static buffer
        counters.clear()
        compiled = model.generate(ids, **kwargs, compile_config=fullgraph_everywhere())
    assert torch.equal(compiled, eager)
    # one graph for every decode step: a recompile per step would, past dynamo's limit, fall
    # back to eager (and under CUDA graphs, trace stale outputs of the last replay)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow  # traces the steps twice; the recipe's case above sees the graph read the buffer
def test_graph_layers_change_what_the_static_recipe_generates():
    """The compiled steps really run the graph: a one-key window differs from dense decoding."""
    torch._dynamo.reset()
    model = tiny_llama()
    ids = torch.randint(1, 256, (1, 80), generator=torch.Generator().manual_seed(2))
    kwargs = dict(max_new_tokens=6, do_sample=False, cache_implementation="static", output_scores=True)
    kwargs["return_dict_in_generate"] = True
    dense = model.generate(ids, **kwargs, compile_config=fullgraph_everywhere())
    torch._dynamo.reset()
    with mg.inject(model, "streaming_llm", mode="sparse", overrides={"sink_size": 1, "window_size": 1}):
        sparse = model.generate(ids, **kwargs, compile_config=fullgraph_everywhere())
    assert not torch.allclose(dense.scores[-1], sparse.scores[-1])


def test_static_state_is_pinned_for_cuda_graphs():
    """Estimator caches built over a static buffer are static addresses for torch.compile, so
    transformers' "reduce-overhead" compile records decode steps that rewrite them in place
    (a mutated input at an unmarked address makes inductor skip CUDA graphs)."""
    model = tiny_llama()
    ids = torch.randint(1, 256, (1, 80), generator=torch.Generator().manual_seed(3))
    with mg.inject(model, "pqcache", mode="sparse", overrides=OVERRIDES["pqcache"]) as injection:
        model.generate(
            ids, max_new_tokens=2, do_sample=False, cache_implementation="static", disable_compile=True
        )
        slots = [injection.state.slot(*key) for key in injection.state.keys()]
    tensors = [t for slot in slots for t in slot.values() if isinstance(t, torch.Tensor)]
    assert tensors and all(hasattr(t, "_dynamo_static_input_type") for t in tensors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="transformers' CUDA-graph recipe needs a GPU")
@pytest.mark.parametrize("graph", ["streaming_llm", "pqcache"])
def test_static_cache_recipe_on_cuda_runs_the_kernels_compiled(graph):
    """On a GPU the recipe as transformers ships it (inductor, CUDA graphs) compiles the sparse
    kernels into the step; its scores match the same generation without compiling."""
    torch._dynamo.reset()
    model = tiny_llama().cuda()
    ids = torch.randint(1, 256, (1, 80), generator=torch.Generator().manual_seed(4)).cuda()
    kwargs = dict(
        max_new_tokens=6, do_sample=False, cache_implementation="static", output_scores=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    with mg.inject(model, graph, mode="sparse", overrides=OVERRIDES[graph]):
        eager = model.generate(ids, **kwargs, disable_compile=True)
        counters.clear()
        compiled = model.generate(ids, **kwargs)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # the kernels were traced
    torch.testing.assert_close(torch.stack(compiled.scores), torch.stack(eager.scores), atol=2e-3, rtol=2e-3)
    torch._dynamo.reset()
