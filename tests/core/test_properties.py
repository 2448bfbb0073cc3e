"""Property-based tests (hypothesis).

1. Core graphs over random shapes and parameters: no NaN, the mask stays inside the keys the
   attention mask allows, sizes are respected.
2. Random well-formed graphs built from the operator registry (every registered operator,
   zoo included, except those that read files): they validate, round-trip through YAML and
   run without NaN.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import maskgraph as mg
from maskgraph.registry import all_ops
from maskgraph.types import GRAPH_INPUTS, PortType

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw):
    hkv = draw(st.integers(1, 2))
    g = draw(st.integers(1, 3))
    nk = draw(st.integers(1, 40))
    nq = draw(st.integers(1, min(nk, 6)))
    return draw(st.integers(1, 2)), hkv * g, hkv, nq, nk, draw(st.sampled_from([4, 8]))


def sizes(nk_max=48):
    return st.one_of(st.integers(1, nk_max), st.floats(0.01, 1.0))


def tensors(shape, seed, causal, dtype=torch.float32):
    b, hq, hkv, nq, nk, d = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, nq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    am = None
    if causal:
        t = torch.arange(nk - nq, nk).view(-1, 1)
        am = torch.zeros(nq, nk).masked_fill(torch.arange(nk).view(1, -1) > t, float("-inf"))
        am = am.view(1, 1, nq, nk)
    return q, k, v, am


def resolved(size, nk):
    """docs/concepts.md, "Sizes": a float share of K is floored (as written: within a 1e-9 relative tolerance)."""
    return math.floor(size * nk * (1 + 1e-9)) if isinstance(size, float) else size


@SETTINGS
@given(
    shape=shapes(),
    sink=sizes(),
    window=sizes(),
    heavy=sizes(),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_oracle_topk_sizes_and_allowed(shape, sink, window, heavy, causal, seed):
    b, hq, hkv, nq, nk, d = shape
    q, k, v, am = tensors(shape, seed, causal)
    g = mg.load_graph(
        "oracle_topk", overrides={"sink_size": sink, "window_size": window, "heavy_size": heavy}
    )
    attn = mg.compile(g)
    p = attn.mask(q, k, v, am)
    out = attn(q, k, v, am)
    assert p.shape == (b, hq, nq, nk) and out.shape == q.shape
    assert not torch.isnan(out).any() and not torch.isnan(p).any()
    assert ((p == 0) | (p == 1)).all()
    allowed = (
        torch.ones(b, hq, nq, nk, dtype=torch.bool)
        if am is None
        else (am > float("-inf")).expand(b, hq, nq, nk)
    )
    for i in range(nq):
        t = nk - nq + i
        fixed = {j for j in range(min(resolved(sink, nk), nk))} | {
            j for j in range(nk) if t - resolved(window, nk) < j <= t
        }
        fixed_t = torch.zeros(nk, dtype=torch.bool)
        fixed_t[list(fixed)] = True
        for bi in range(b):
            for h in range(hq):
                row = p[bi, h, i] > 0
                extra = row & ~fixed_t
                assert not (extra & ~allowed[bi, h, i]).any(), "top-k picked a forbidden key"
                eligible = int((~fixed_t & allowed[bi, h, i]).sum())
                assert int(extra.sum()) == min(resolved(heavy, nk), eligible)
                assert bool((row | ~fixed_t).all()), "a sink/window key is missing"


@SETTINGS
@given(
    shape=shapes(),
    top_p=st.floats(0.01, 1.0),
    window=sizes(),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_oracle_topp_reaches_its_mass(shape, top_p, window, causal, seed):
    b, hq, hkv, nq, nk, d = shape
    q, k, v, am = tensors(shape, seed, causal)
    g = mg.load_graph("oracle_topp", overrides={"sink_size": 1, "window_size": window, "top_p": top_p})
    attn = mg.compile(g)
    p = attn.mask(q, k, v, am)
    assert not torch.isnan(attn(q, k, v, am)).any()
    logits = mg.gqa_logits(q, k, d**-0.5, am).double()
    fixed = mg.compile(
        mg.load_graph("streaming_llm", overrides={"sink_size": 1, "window_size": window})
    ).mask(q, k, v, am)
    residual = (fixed == 0) & torch.isfinite(logits)
    probs = torch.softmax(logits.masked_fill(~residual, float("-inf")), -1).nan_to_num(0.0)
    heavy = (p > 0) & (fixed == 0)
    assert not (heavy & ~residual).any()
    mass = (probs * heavy).sum(-1)
    has_residual = residual.any(-1)
    assert (mass[has_residual] >= top_p - 1e-4).all()
    # Minimal: dropping the lowest-probability chosen key falls below top_p.
    lowest = torch.where(heavy, probs, torch.full_like(probs, 2.0)).amin(-1)
    assert (mass[has_residual] - lowest[has_residual] < top_p + 1e-4).all()


@SETTINGS
@given(shape=shapes(), seed=st.integers(0, 2**16), bf16=st.booleans())
def test_dense_never_nan_and_matches_float64(shape, seed, bf16):
    b, hq, hkv, nq, nk, d = shape
    q, k, v, am = tensors(shape, seed, True, torch.bfloat16 if bf16 else torch.float32)
    out = mg.compile("dense")(q, k, v, am)
    kk = k.double().repeat_interleave(hq // hkv, 1)
    vv = v.double().repeat_interleave(hq // hkv, 1)
    w = torch.softmax(q.double() @ kk.transpose(-1, -2) * d**-0.5 + am.double(), -1)
    tol = 2e-2 if bf16 else 1e-5
    torch.testing.assert_close(out.double(), w @ vv, atol=tol, rtol=tol)


# ----- random graphs from the registry ----------------------------------------------------------
def usable_ops() -> dict:
    """Operators a random graph may use: no file parameters, no State ports."""
    out = {}
    for name, spec in all_ops().items():
        if any(p.kind == "path" for p in spec.params):
            continue
        if any(p.type == PortType.STATE and not p.optional for p in spec.inputs):
            continue
        if name.endswith("_test"):
            continue
        out[name] = spec
    return out


def param_values(draw, spec):
    values = {}
    for p in spec.params:
        if draw(st.booleans()) and not p.required:
            continue  # keep the default
        if p.kind == "size":
            v = draw(st.one_of(st.integers(1, 48), st.floats(0.01, 1.0)))
        elif p.kind == "offset":
            v = draw(st.one_of(st.integers(0, 48), st.floats(0.0, 1.0)))
        elif p.kind == "int":
            lo = int(p.low) if p.low is not None else 0
            hi = int(p.high) if p.high is not None else lo + 8
            v = draw(st.integers(lo, min(hi, lo + 8)))
        elif p.kind == "float":
            lo = p.low if p.low is not None else 0.0
            hi = p.high if p.high is not None else lo + 4.0
            v = draw(st.floats(lo, hi, allow_nan=False, exclude_min=p.low_open, exclude_max=p.high_open))
        elif p.kind == "bool":
            v = draw(st.booleans())
        elif p.kind == "choice":
            v = draw(st.sampled_from(p.choices))
        elif p.kind == "seed":
            v = draw(st.integers(0, 1000))
        else:
            continue
        try:
            values[p.name] = p.check(v)
        except mg.ParameterError:
            if p.required:
                raise
    return values


@st.composite
def random_graphs(draw):
    ops = usable_ops()
    names = sorted(ops)
    produced: dict[PortType, list[str]] = {}
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        ready = [
            n
            for n in names
            if all(
                p.optional or p.type in GRAPH_INPUTS.values() or produced.get(p.type) for p in ops[n].inputs
            )
        ]
        spec = ops[draw(st.sampled_from(ready))]
        inputs = {}
        for port in spec.inputs:
            if port.type in GRAPH_INPUTS.values():
                continue
            options = produced.get(port.type, [])
            if not options or (port.optional and draw(st.booleans())):
                continue
            if port.variadic:
                inputs[port.name] = draw(st.lists(st.sampled_from(options), min_size=1, max_size=3))
            else:
                inputs[port.name] = draw(st.sampled_from(options))
        name = f"n{i}_{spec.name}"
        nodes.append({"name": name, "op": spec.name, "inputs": inputs, "params": param_values(draw, spec)})
        produced.setdefault(spec.output, []).append(name)
    masks = produced.get(PortType.MASK, [])
    if not masks:
        nodes.append({"name": "fallback_full", "op": "full"})
        masks = ["fallback_full"]
    nodes.append({"name": "out", "op": "union", "inputs": {"masks": masks}})
    return {"graph": "random", "nodes": nodes, "output": "out"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graphs(), shape=shapes(), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_random_registry_graphs_validate_roundtrip_and_run(graph, shape, causal, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mg.MaskgraphWarning)  # unused Scores nodes are allowed
        try:
            g = mg.load_graph(graph)
        except mg.WiringError as exc:  # an operator's own wiring rule (OpSpec.validate)
            assume(False)
            raise AssertionError("unreachable") from exc
        again = mg.load_graph(g.to_yaml())
    assert again == g
    q, k, v, am = tensors(shape, seed, causal)
    attn = mg.compile(g)
    try:
        p = attn.mask(q, k, v, am, state=mg.State())
        out = attn(q, k, v, am, state=mg.State())
    except (mg.ShapeError, mg.NotSupportedError) as exc:  # an operator's stated shape limit
        assume(False)
        raise AssertionError("unreachable") from exc
    assert not torch.isnan(out).any(), g.to_yaml()
    assert not torch.isnan(p).any()
    assert ((p >= 0) & (p <= 1)).all()
    assert p.shape == (shape[0], shape[1], shape[3], shape[4])


def test_registry_has_operators_for_random_graphs():
    ops = usable_ops()
    assert {"full", "sink", "local", "causal", "exact", "topk", "topp", "union"} <= set(ops)


@pytest.mark.parametrize("name", sorted(mg.shipped_graphs()))
def test_shipped_graph_yaml_round_trip(name):
    g = mg.load_graph(name)
    again = mg.load_graph(g.to_yaml())
    assert again == g
    assert mg.load_graph(again.to_yaml()).to_yaml() == g.to_yaml()


# ----- fuzzing the loader -----------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "$sink_size", "$nope", "union", "sink", "keys", "masks", "a", "nodes", "1e999"]),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), SCALARS), inner, max_size=3),
    ),
    max_leaves=8,
)


def mutate(data, path, value):
    """A deep copy of ``data`` with the item at ``path`` (keys / indices) replaced or deleted."""
    import copy

    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


DELETE = object()


def paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(mg.shipped_graphs())),
    choice=st.integers(0, 10**6),
    value=st.one_of(st.just(DELETE), VALUES),
    as_yaml=st.booleans(),
)
def test_mutated_graphs_fail_only_with_maskgraph_errors(name, choice, value, as_yaml):
    """Any single change to a shipped graph either loads or raises a MaskgraphError."""
    import yaml

    base = mg.load_graph(name).to_dict()
    all_paths = [p for p in paths(base) if p]
    path = all_paths[choice % len(all_paths)]
    data = mutate(base, path, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mg.MaskgraphWarning)
        try:
            if as_yaml:
                try:
                    text = yaml.safe_dump(data)
                except yaml.YAMLError:
                    return
                mg.load_graph(text)
            else:
                mg.load_graph(data)
        except mg.MaskgraphError as exc:
            assert str(exc)
