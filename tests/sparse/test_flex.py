"""The FlexAttention prefill of position-only graphs: simulate mode's keys and output, one call."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.errors import NotSupportedError
from maskgraph.sparse import flex as flex_module

D = 16

# graph -> (YAML nodes, the rule written plainly: keep(t, j) for a query at t and key j)
SINK, WINDOW, STRIDE = 5, 40, 7


def _sink_window(t: int, j: int) -> bool:
    return j < SINK or t - WINDOW < j <= t


def _strided_or_sink(t: int, j: int) -> bool:
    return j < SINK or (j <= t and (t - j) % STRIDE == 0)


def _causal_not_window(t: int, j: int) -> bool:
    return j <= t and not (t - WINDOW < j <= t)


def _window_and_causal(t: int, j: int) -> bool:
    return t - WINDOW < j <= t


GRAPHS = {
    "streaming_llm": (
        mg.load_graph("streaming_llm", overrides={"sink_size": SINK, "window_size": WINDOW}),
        _sink_window,
    ),
    "dense": (mg.load_graph("dense"), lambda t, j: True),
    "strided": (
        {
            "graph": "strided_sink",
            "nodes": [
                {"name": "sink", "op": "sink", "params": {"size": SINK}},
                {"name": "steps", "op": "strided", "params": {"stride": STRIDE}},
                {"name": "kept", "op": "union", "inputs": {"masks": ["sink", "steps"]}},
            ],
            "output": "kept",
        },
        _strided_or_sink,
    ),
    "difference": (
        {
            "graph": "far_past",
            "nodes": [
                {"name": "past", "op": "causal"},
                {"name": "near", "op": "local", "params": {"size": WINDOW}},
                {"name": "kept", "op": "difference", "inputs": {"a": "past", "b": "near"}},
            ],
            "output": "kept",
        },
        _causal_not_window,
    ),
    "intersection": (
        {
            "graph": "window_in_past",
            "nodes": [
                {"name": "past", "op": "causal"},
                {"name": "near", "op": "local", "params": {"size": WINDOW}},
                {"name": "kept", "op": "intersection", "inputs": {"a": "near", "b": "past"}},
            ],
            "output": "kept",
        },
        _window_and_causal,
    ),
}

# (B, Hq, Hkv, Q, K): a prompt (Q = K) with GQA and K not a multiple of 128; a chunk of queries
# after cached keys (K − Q > 0); G = 3; a single block; K = 129 (one key past a block)
SHAPES = [(2, 4, 2, 300, 300), (1, 6, 2, 77, 300), (2, 2, 2, 100, 129), (1, 3, 1, 20, 20), (1, 2, 1, 5, 260)]


def reference(q, k, v, scaling, keep, am=None, causal=False, sinks=None) -> tuple[torch.Tensor, int]:
    """Float64 softmax attention of each query over the keys ``keep(t, j)`` keeps (and the
    causal rule and the attention mask allow), from a dense mask filled key by key: (out, rows
    with no key). Query i sits at position K − Q + i; KV head h // G serves query head h."""
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    kept = torch.zeros(nq, nk, dtype=torch.bool)
    for i in range(nq):
        t = nk - nq + i
        for j in range(nk):
            kept[i, j] = keep(t, j) and not (causal and j > t)
    logits = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double().repeat_interleave(hq // hkv, 1)) * scaling
    allowed = kept.expand(b, hq, nq, nk)
    if am is not None:
        if am.dtype == torch.bool:
            allowed = allowed & am
        else:
            allowed = allowed & (am > float("-inf"))
            logits = logits + am.double().masked_fill(am == float("-inf"), 0.0)
    logits = logits.masked_fill(~allowed, float("-inf"))
    m = logits.amax(-1, keepdim=True)
    if sinks is not None:
        m = torch.maximum(m, sinks.double().view(1, hq, 1, 1))
    m = m.masked_fill(m == float("-inf"), 0.0)
    w = torch.exp(logits - m)
    den = w.sum(-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.double().view(1, hq, 1, 1) - m)
    out = (w @ v.double().repeat_interleave(hq // hkv, 1)) / den.clamp_min(1e-300)
    empty = int((~allowed.any(-1)).sum())
    return out, empty


def inputs(shape, dtype=torch.float32, seed=0):
    b, hq, hkv, nq, nk = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, nq, D, generator=gen).to(dtype)
    k = torch.randn(b, hkv, nk, D, generator=gen).to(dtype)
    v = torch.randn(b, hkv, nk, D, generator=gen).to(dtype)
    return q, k, v


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture
def flex_calls(monkeypatch):
    """The number of FlexAttention prefills that ran (each one call of the fused attention)."""
    calls = []
    real = flex_module.FlexPrefill.__call__

    def spy(self, queries, *args, **kwargs):
        calls.append(queries.shape[2])
        return real(self, queries, *args, **kwargs)

    monkeypatch.setattr(flex_module.FlexPrefill, "__call__", spy)
    return calls


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(GRAPHS))
def test_flex_prefill_matches_a_float64_reference(name, shape, flex_calls):
    graph, keep = GRAPHS[name]
    attn = mg.compile(graph, mode="sparse", prefill="flex")
    assert attn.prefill.path == "flex"
    q, k, v = inputs(shape)
    scaling = D**-0.5
    out = attn(q, k, v, causal=True)
    want, empty = reference(q, k, v, scaling, keep, causal=True)
    assert flex_calls == [shape[3]]
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert rel(out, want) < 1e-5
    assert int(attn.empty_rows) == empty
    # simulate mode keeps the same keys
    assert rel(mg.compile(graph)(q, k, v, causal=True), out) < 1e-5


@pytest.mark.parametrize(
    "shape", [(2, 4, 2, 300, 300), (2, 6, 2, 60, 131)], ids=lambda s: "x".join(map(str, s))
)
def test_flex_prefill_with_masks_and_sinks(shape, flex_calls):
    """A left-padded batch's bool mask, an additive mask with −inf and finite values (per head),
    sink logits, and rows the mask empties (counted, zeros)."""
    graph, keep = GRAPHS["streaming_llm"]
    b, hq, _, nq, nk = shape
    q, k, v = inputs(shape, seed=1)
    gen = torch.Generator().manual_seed(2)
    scaling = 0.3
    t = (nk - nq + torch.arange(nq)).view(-1, 1)
    j = torch.arange(nk).view(1, -1)
    padded = (j <= t).expand(b, 1, nq, nk).clone()
    padded[1, :, :, :9] = False  # left padding in row 1: its first 9 queries (if Q = K) see no key
    additive = torch.randn(b, hq, nq, nk, generator=gen)
    additive = additive.masked_fill(torch.rand(b, hq, nq, nk, generator=gen) < 0.3, float("-inf"))
    sinks = torch.randn(hq, generator=gen)
    simulate = mg.compile(graph)
    empties = []
    for am, with_sinks in ((padded, False), (padded, True), (additive, True)):
        attn = mg.compile(graph, mode="sparse", prefill="flex")
        s = sinks if with_sinks else None
        out = attn(q, k, v, am, scaling, sinks=s)
        want, empty = reference(q, k, v, scaling, keep, am=am, sinks=s)
        assert rel(out, want) < 1e-5
        assert int(attn.empty_rows) == empty
        assert rel(simulate(q, k, v, am, scaling, sinks=s), out) < 1e-5
        empties.append(empty)
    assert len(flex_calls) == 3
    assert empties[0] == hq * max(0, 9 - (nk - nq))  # the padded row's queries with no key


def test_eager_chunks_of_queries_give_the_same_output(flex_calls, monkeypatch):
    """The eager path runs FlexAttention over chunks of ``chunk_size`` queries (each its own
    rows of the block mask and of the attention mask): the same output as one call."""
    chunks = []
    real = flex_module._eager_flex

    def spy(queries, *args, **kwargs):
        chunks.append(queries.shape[2])
        return real(queries, *args, **kwargs)

    monkeypatch.setattr(flex_module, "_eager_flex", spy)
    graph, keep = GRAPHS["streaming_llm"]
    shape = (2, 4, 2, 230, 300)
    b, hq, _, nq, nk = shape
    q, k, v = inputs(shape, seed=7)
    gen = torch.Generator().manual_seed(8)
    additive = torch.randn(b, 1, nq, nk, generator=gen)
    additive = additive.masked_fill(torch.rand(b, 1, nq, nk, generator=gen) < 0.2, float("-inf"))
    sinks = torch.randn(hq, generator=gen)
    chunked = mg.compile(graph, mode="sparse", prefill="flex", chunk_size=64)
    out = chunked(q, k, v, additive, causal=True, sinks=sinks)
    want, empty = reference(q, k, v, D**-0.5, keep, am=additive, causal=True, sinks=sinks)
    assert rel(out, want) < 1e-5
    assert int(chunked.empty_rows) == empty
    assert flex_calls == [nq]
    assert chunks == [64, 64, 64, 38]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flex_prefill_half_precision(dtype, flex_calls):
    graph, keep = GRAPHS["streaming_llm"]
    shape = (2, 4, 2, 200, 330)
    q, k, v = inputs(shape, dtype, seed=3)
    out = mg.compile(graph, mode="sparse", prefill="flex")(q, k, v, causal=True)
    want, _ = reference(q, k, v, D**-0.5, keep, causal=True)
    assert out.dtype == dtype
    assert rel(out, want) < 1e-2
    assert flex_calls == [200]


def test_float64_inputs_are_computed_in_float32(flex_calls):
    graph, keep = GRAPHS["streaming_llm"]
    q, k, v = inputs((1, 2, 1, 50, 150), torch.float64, seed=4)
    out = mg.compile(graph, mode="sparse", prefill="flex")(q, k, v, causal=True)
    want, _ = reference(q, k, v, D**-0.5, keep, causal=True)
    assert out.dtype == torch.float64
    assert rel(out, want) < 1e-5


def test_the_block_mask_is_built_once_per_shape_and_mask(monkeypatch):
    """Layers of one forward share positions: the BlockMask is reused while the shape and the
    attention mask object (unchanged) are the same, and rebuilt otherwise."""
    built = []
    real = flex_module.create_block_mask

    def spy(*args, **kwargs):
        built.append(args[3:5])
        return real(*args, **kwargs)

    monkeypatch.setattr(flex_module, "create_block_mask", spy)
    graph, _ = GRAPHS["streaming_llm"]
    attn = mg.compile(graph, mode="sparse", prefill="flex")
    q, k, v = inputs((1, 2, 1, 130, 130), seed=5)
    for _layer in range(3):
        attn(q, k, v, causal=True)
    assert built == [(130, 130)]
    attn(q[:, :, :60], k, v, causal=True)  # another query count
    assert built == [(130, 130), (60, 130)]
    mask = torch.ones(1, 1, 130, 130, dtype=torch.bool).tril()
    first = attn(q, k, v, mask)
    attn(q, k, v, mask)
    assert len(built) == 3
    mask[..., :10] = False  # changed in place: built again, and the output follows
    changed = attn(q, k, v, mask)
    assert len(built) == 4
    assert not torch.allclose(first, changed)
    attn(q, k, v, mask.clone())  # another mask object
    assert len(built) == 5


def test_paths_are_chosen_when_the_graph_is_compiled(flex_calls):
    """streaming_llm takes the flex path, Quest (an estimator) the chunked path, with the node
    named; a decode step and a static buffer keep their own paths."""
    quest = mg.compile("quest", mode="sparse", overrides={"sink_size": 4, "window_size": 8, "heavy_size": 16})
    assert quest.prefill.path == "chunked"
    assert "node 'bounds' (op 'quest')" in quest.prefill.reason
    assert mg.compile("quest").prefill is None  # simulate mode
    q, k, v = inputs((1, 4, 2, 40, 64), seed=6)
    quest(q, k, v, causal=True)
    assert flex_calls == []

    graph, keep = GRAPHS["streaming_llm"]
    attn = mg.compile(graph, mode="sparse", prefill="flex")
    assert attn.prefill.path == "flex"
    assert "flex" in str(attn.prefill)
    one = attn(q[:, :, -1:], k, v)  # decode: the gathered path
    assert flex_calls == []
    want, _ = reference(q[:, :, -1:], k, v, D**-0.5, keep)
    assert rel(one, want) < 1e-5
    static = attn(q, k, v, causal=True, num_keys=torch.tensor(64))  # a static buffer: chunked
    assert flex_calls == []
    assert rel(static, attn(q, k, v, causal=True)) < 1e-5
    assert flex_calls == [40]
    asks_grad = attn(q.clone().requires_grad_(), k, v, causal=True)  # no CPU backward: chunked
    assert flex_calls == [40]
    assert rel(asks_grad.detach(), static) < 1e-5


def test_an_operator_without_a_position_rule_keeps_the_chunked_path():
    """A graph mixing fixed patterns with a top-k is chunked, naming the top-k."""
    attn = mg.compile(
        "oracle_topk", mode="sparse", overrides={"sink_size": 4, "window_size": 8, "heavy_size": 8}
    )
    assert attn.prefill.path == "chunked"
    assert "declares no position rule" in attn.prefill.reason


def test_the_default_takes_flex_only_where_it_compiles(flex_calls):
    """prefill="auto": the eager backend runs a prompt chunked (uncompiled FlexAttention would
    compute every score) and says so; the inductor backend chooses flex (compiled on CUDA);
    prefill="chunked" never takes flex; prefill="flex" refuses a graph with a
    node that has no position rule, and an unknown value is refused."""
    graph, keep = GRAPHS["streaming_llm"]
    q, k, v = inputs((1, 4, 2, 40, 64), seed=8)
    want, _ = reference(q, k, v, D**-0.5, keep)
    eager = mg.compile(graph, mode="sparse")
    assert eager.prefill.path == "chunked" and "backend 'eager'" in eager.prefill.reason
    inductor = mg.compile(graph, mode="sparse", backend="inductor")
    assert inductor.prefill.path == "flex" and "CUDA" in inductor.prefill.reason
    assert inductor._sparse.takes_flex(q, k, v) == (q.device.type == "cuda")  # compiles on CUDA only
    assert mg.compile(graph, mode="sparse", prefill="flex")._sparse.takes_flex(q, k, v)
    asked = mg.compile(graph, mode="sparse", backend="inductor", prefill="chunked")
    assert asked.prefill.path == "chunked"
    for attn in (eager, mg.compile(graph, mode="sparse", prefill="chunked")):
        assert rel(attn(q, k, v, causal=True), want) < 1e-5
    assert flex_calls == []
    with pytest.raises(NotSupportedError, match="node 'bounds' \\(op 'quest'\\)"):
        mg.compile("quest", mode="sparse", prefill="flex")
    with pytest.raises(NotSupportedError, match="prefill must be one of auto, flex, chunked"):
        mg.compile(graph, mode="sparse", prefill="always")


def test_kernel_triton_keeps_the_fused_kernel_for_every_call():
    graph, _ = GRAPHS["streaming_llm"]
    attn = mg.compile(graph, mode="sparse", kernel="triton")
    assert attn.prefill.path == "chunked"
    assert "kernel='triton'" in attn.prefill.reason


def _position_ops() -> list[str]:
    from maskgraph.lowering import MaskLowering
    from maskgraph.registry import all_ops

    return sorted(
        name
        for name, spec in all_ops().items()
        if isinstance(spec.sparse, MaskLowering) and spec.sparse.positions is not None
        and not any(port.type.name == "MASK" for port in spec.inputs)
    )  # fmt: skip


@pytest.mark.parametrize("name", _position_ops())
def test_every_declared_position_rule_keeps_the_simulate_functions_keys(name):
    """Each operator that declares a position rule (and reads no mask) keeps, by its rule, the
    keys its simulate function keeps: one-node graphs at sizes given in tokens and as a share
    of K, queries after cached keys."""
    from maskgraph.registry import get_op

    spec = get_op(name)
    settings: list[dict] = [{}]
    for param in spec.params:
        if param.kind == "size":
            settings = [{param.name: 13}, {param.name: 0.3}]
        elif param.kind == "int":
            settings = [{param.name: 5}, {param.name: 1}]
    nq, nk = 37, 90
    q, k, v = inputs((1, 2, 1, nq, nk), seed=9)
    t = (nk - nq + torch.arange(nq)).view(-1, 1)
    j = torch.arange(nk).view(1, -1)
    for params in settings:
        graph = mg.load_graph(
            {
                "graph": f"one_{name}",
                "nodes": [{"name": "kept", "op": name, "params": params}],
                "output": "kept",
            }
        )
        kept = mg.compile(graph).mask(q, k, v)[0, 0] > 0
        rule = spec.sparse.positions(graph.node_params("kept"), {}, nk)
        assert torch.equal(rule(t, j).expand(nq, nk), kept), (name, params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled FlexAttention kernel needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_prefill_on_cuda_is_one_kernel_call(dtype, monkeypatch):
    """Under the inductor backend on CUDA a prompt (causal, no mask) and a chunk after cached
    keys (a left-padded bool mask, sink logits) each run as one call of the compiled
    FlexAttention, with the float64 reference's output."""
    calls = []
    real = flex_module.compiled_flex

    def counting():
        kernel = real()

        def call(queries, *args, **kwargs):
            calls.append(queries.shape[2])
            return kernel(queries, *args, **kwargs)

        return call

    monkeypatch.setattr(flex_module, "compiled_flex", counting)
    graph, keep = GRAPHS["streaming_llm"]
    attn = mg.compile(graph, mode="sparse", backend="inductor")
    tol = 2e-3 if dtype == torch.float32 else 2e-2
    cuda = torch.device("cuda")
    q, k, v = inputs((1, 8, 2, 700, 700), dtype, seed=10)
    out = attn(q.to(cuda), k.to(cuda), v.to(cuda), causal=True)
    want, _ = reference(q, k, v, D**-0.5, keep, causal=True)
    assert out.dtype == dtype and rel(out.cpu(), want) < tol
    shape = (2, 8, 2, 300, 1000)
    q, k, v = inputs(shape, dtype, seed=11)
    t = (1000 - 300 + torch.arange(300)).view(-1, 1)
    padded = (torch.arange(1000).view(1, -1) <= t).expand(2, 1, 300, 1000).clone()
    padded[1, ..., :150] = False
    sinks = torch.randn(8, generator=torch.Generator().manual_seed(12))
    out = attn(q.to(cuda), k.to(cuda), v.to(cuda), padded.to(cuda), sinks=sinks.to(cuda))
    want, empty = reference(q, k, v, D**-0.5, keep, am=padded, sinks=sinks)
    assert rel(out.cpu(), want) < tol
    assert int(attn.empty_rows) == empty
    assert calls == [700, 300]


def test_block_masks_made_with_an_attention_mask_are_not_kept_past_a_few():
    """Each padded prompt's BlockMask holds its mask: only the latest few stay cached, the
    latest one among them, while masks of unpadded prompts are kept."""
    graph, _ = GRAPHS["streaming_llm"]
    attn = mg.compile(graph, mode="sparse", prefill="flex")
    q, k, v = inputs((1, 4, 2, 40, 64), seed=9)
    attn(q, k, v, causal=True)
    masks = [
        torch.ones(1, 1, 40, 64, dtype=torch.bool).tril(24) for _ in range(flex_module.WITH_MASK_KEPT + 3)
    ]
    for mask in masks:
        attn(q, k, v, mask)
    kept = attn._sparse.flex._masks
    held = [am for _, am in kept.values() if am is not None]
    assert len(held) == flex_module.WITH_MASK_KEPT
    assert held[-1] is masks[-1]
    assert len(kept) == flex_module.WITH_MASK_KEPT + 1  # and the unpadded prompt's
