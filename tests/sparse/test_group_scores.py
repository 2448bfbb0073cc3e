"""Grouped estimator scores (``sparse_group_scores``, one Triton kernel; here through Triton's
interpreter) equal the max over each KV group of the per-query-head scores."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch
from launches import record_topk_launches
from references import block_ranges

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo import double_sparsity as ds
from maskgraph.ops.zoo import hashattention as ha
from maskgraph.ops.zoo import quest
from maskgraph.triton_util import triton_installed, usable

if not triton_installed() or not usable(torch.device("cpu")):
    pytest.skip("needs triton with its interpreter on (tests/conftest.py)", allow_module_level=True)

D = 16
# (B, Hq, Hkv, Q, K): G = 2, 3 and 1, Q > 1, K not a multiple of any block (256 / 1024 keys)
SHAPES = [(1, 4, 2, 1, 1100), (2, 6, 2, 3, 300), (1, 2, 2, 2, 45)]


def files(tmp_path, hq, hkv):
    hat = tmp_path / "hat.safetensors"
    ha.save_hash_weights(hat, ha.random_hash_weights(1, hq, hkv, D, 64, 8, seed=1))
    gen = torch.Generator().manual_seed(2)
    chan = tmp_path / "ds.safetensors"
    ds.save_channels(chan, torch.stack([torch.randperm(D, generator=gen) for _ in range(hkv)])[None])
    return {"hashattention": str(hat), "double_sparsity": str(chan), "quest": None}


def estimator(op, path):
    if op == "hashattention":
        return {"weights": path, "hat_bits": 64}
    if op == "quest":
        return {"page_size": 16, "label_bits": 16}
    return {"channels": path, "group_factor": 4, "label_bits": 4}


def graph_files(op, path) -> dict:
    """Graph overrides naming the estimator's file (quest needs none; its pages are 4 keys)."""
    if op == "hashattention":
        return {"hat_weights": path, "hat_bits": 64}
    if op == "quest":
        return {"page_size": 4}
    return {"ds_channels": path}


def estimator_case(op, dtype, shape, tmp_path, seed: int) -> tuple:
    """(spec, params, prep, env) of estimator ``op`` on fresh queries and keys of ``shape``
    (B, Hq, Hkv, Q, K) in ``dtype``, the queries the last Q positions (causal)."""
    b, hq, hkv, q, k = shape
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(b, hq, q, D, generator=gen).to(dtype)
    keys = torch.randn(b, hkv, k, D, generator=gen).to(dtype)
    params = estimator(op, files(tmp_path, hq, hkv)[op])
    spec = mg.get_op(op)
    prep = spec.prepare(keys, keys, params, {}, 0)
    return spec, params, prep, Env(queries, keys, keys, None, D**-0.5, torch.arange(k - q, k), 0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
def test_group_scores_are_the_group_max(op, dtype, shape, tmp_path):
    b, hq, hkv, q, k = shape
    spec, params, prep, env = estimator_case(op, dtype, shape, tmp_path, sum(shape))
    queries = env.queries
    per_head = spec.sparse.scores(env, prep, **params).scores
    made = spec.sparse.group_scores(env, prep, **params)
    grouped, block = made.scores, made.block
    if callable(grouped):  # HashAttention's, made where used (it offers histograms)
        grouped = grouped()
    n = per_head.shape[-1]  # K, or pages for quest
    want = per_head.view(b, hkv, hq // hkv, q, n).amax(2)
    assert block == (16 if op == "quest" else 1)
    assert grouped.shape == want.shape and grouped.dtype == torch.float32
    if op == "quest":  # against float64, from the cached page bounds
        qd, lo, hi = queries.double(), prep["lo"].double(), prep["hi"].double()
        g = hq // hkv
        u = torch.maximum(
            qd.view(b, hkv, g, q, 1, D) * hi.view(b, hkv, 1, 1, -1, D),
            qd.view(b, hkv, g, q, 1, D) * lo.view(b, hkv, 1, 1, -1, D),
        ).sum(-1)
        exact = (u * D**-0.5).amax(2)
        torch.testing.assert_close(grouped.double(), exact, rtol=1e-5, atol=1e-5)
    if op == "hashattention":  # integer agreement counts: exact
        assert torch.equal(grouped, want)
    else:  # float sums in another order
        torch.testing.assert_close(grouped, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape",
    [(1, 4, 2, 1, 1100), (2, 6, 2, 3, 300), (1, 20, 1, 2, 45)],
    ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s),
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("block", [16, 64])
def test_quest_tensor_core_form_is_the_float64_bound(shape, dtype, block, monkeypatch):
    """The tensor-core form: relu(q)·hi + min(q, 0)·lo as two products over GP ≥ 16 padded heads (G = 2,
    3 and 20) equals the float64 bound max(q·hi, q·lo) summed, page counts not a multiple of the
    block, and equals the elementwise kernel to float32 rounding."""
    b, hq, hkv, q, k = shape
    gen = torch.Generator().manual_seed(sum(shape) + block)
    queries = torch.randn(b, hq, q, D, generator=gen).to(dtype)
    keys = torch.randn(b, hkv, k, D, generator=gen).to(dtype)
    prep = quest.prepare_quest(keys, keys, {"page_size": 16, "label_bits": 16}, {}, 0)
    lo, hi = prep["lo"], prep["hi"]
    monkeypatch.setattr(quest, "QUEST_BLOCK", block)
    monkeypatch.setattr(quest, "QUEST_DOT_BLOCK", block)
    dot, dot_ranges = quest._quest_group_scores(queries, lo, hi, 0.25, hkv)
    monkeypatch.setattr(quest, "_quest_dot", lambda *args: False)  # the elementwise form
    plain, plain_ranges = quest._quest_group_scores(queries, lo, hi, 0.25, hkv)
    g = hq // hkv
    qd = queries.double().view(b, hkv, g, q, 1, D)
    u = torch.maximum(qd * hi.double().view(b, hkv, 1, 1, -1, D), qd * lo.double().view(b, hkv, 1, 1, -1, D))
    exact = (u.sum(-1) * 0.25).amax(2)
    assert dot.shape == exact.shape == (b, hkv, q, lo.shape[2])
    torch.testing.assert_close(dot.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dot, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(plain_ranges.long(), block_ranges(plain, quest._quest_block(False)))
    assert torch.equal(dot_ranges.long(), block_ranges(dot, quest._quest_block(True)))


def sparse_case(op, tmp_path, b: int, k: int, seed: int, q: int = 1):
    """(graph, queries, keys, values, estimator file) for a shared-GQA sparse run, Hq=4, Hkv=2."""
    hq, hkv = 4, 2
    gen = torch.Generator().manual_seed(seed)
    qs, ks, vs = (torch.randn(b, h, n, D, generator=gen) for h, n in ((hq, q), (hkv, k), (hkv, k)))
    path = files(tmp_path, hq, hkv)[op]
    overrides = {"sink_size": 4, "window_size": 8, "heavy_size": 20, **graph_files(op, path)}
    return mg.load_graph(op, overrides=overrides), qs, ks, vs, path


@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
def test_shared_sparse_mode_uses_the_group_scores(op, tmp_path, monkeypatch):
    graph, qs, ks, vs, _ = sparse_case(op, tmp_path, b=2, k=300, seed=5)
    spec = mg.get_op(op)
    calls = []
    real = spec.sparse.group_scores
    spied = replace(spec.sparse, group_scores=lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(spec, "sparse", spied)
    grouped = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs, state=mg.State())
    assert calls  # the lowering took the grouped scores
    monkeypatch.setattr(spec, "sparse", replace(spec.sparse, group_scores=None))
    plain = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs, state=mg.State())
    assert ((grouped - plain).norm() / plain.norm()).item() < 1e-5


@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
@pytest.mark.parametrize(
    "small_max, q",
    [
        pytest.param(4096, 1, id="one_program-1"),
        pytest.param(0, 1, id="segments-1"),
        pytest.param(0, 3, id="segments-3"),
        # a window sliding over 3 queries on the one-program path: the longest to interpret
        pytest.param(4096, 3, id="one_program-3", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("padded", [False, True], ids=["", "padded"])
def test_the_top_k_drops_the_prior_on_the_kernel_path(op, q, small_max, padded, tmp_path, monkeypatch):
    """Grouped scores, without an attention mask or with a padded batch's (which the estimator
    kernel applies): the Triton top-k drops the sink and the window (sliding over Q queries)
    itself, pages of Quest where they lie wholly in them — except Quest's under a mask, where
    its score kernel drops them key by key (a page counts if one of its keys is allowed and
    outside them: test_quest_skips_pages_whose_allowed_keys_the_prior_holds); the output is the
    torch path's (K = 301: pages of 4 and segments of
    1024 keys end short)."""
    from maskgraph.lowering import topk as triton_topk

    monkeypatch.setattr(triton_topk, "SMALL_MAX", small_max)
    seen = []
    real = triton_topk.exclusion_args
    # the hash score kernel takes the same arguments (None where it drops nothing)
    monkeypatch.setattr(
        triton_topk, "exclusion_args", lambda exclude: exclude and seen.append(exclude) or real(exclude)
    )
    graph, qs, ks, vs, _ = sparse_case(op, tmp_path, b=2, k=301, seed=13, q=q)
    am = None
    if padded:  # row 1 starts with 37 padding keys (the sink's among them); causal over Q
        am = torch.triu(torch.full((q, 301), float("-inf")), 301 - q + 1).expand(2, 1, q, 301).clone()
        am[1, ..., :37] = float("-inf")
    run = {"attention_mask": am, "state": mg.State()}
    masked = mg.compile(graph, mode="sparse", gqa="shared", kernel="torch")(qs, ks, vs, **run)
    # the torch top-k drops nothing itself; under a mask Quest's score kernel drops the runs
    assert bool(seen) == (padded and op == "quest")
    seen.clear()
    run["state"] = mg.State()
    out = mg.compile(graph, mode="sparse", gqa="shared", kernel="triton")(qs, ks, vs, **run)
    block = 4 if op == "quest" else 1  # sink 4, window 8: t − 8 < j ≤ t for t = 301 − q + i
    # over segments HashAttention's score kernel drops them from the top-k's histograms too
    uses = 2 if op == "hashattention" and small_max == 0 else 1
    if padded and op == "quest":  # Quest's score kernel drops them, key by key
        block = 1
    assert seen == [[q, block, 301, 0, 4, 0, 301 - q - 7, 301 - q + 1, 1]] * uses
    assert ((out - masked).norm() / masked.norm()).item() < 1e-5


@pytest.mark.parametrize(
    "shape", SHAPES + [(1, 12, 2, 2, 700)], ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s)
)
@pytest.mark.parametrize("bits", [32, 64, 5])
@pytest.mark.parametrize("runs", [None, [(0, 4, 0), (20, 29, 1)]], ids=["all", "prior"])
@pytest.mark.parametrize("masked", [False, True], ids=["", "masked"])
def test_hash_histograms_count_the_scores(shape, bits, runs, masked):
    """The hash kernel's histograms, one per (row, block of seg keys): bin 1 + score, the keys
    of the prior's runs, those an attention mask forbids (their scores −inf) and the padding
    past K in bin 0 (padding then taken off), counted plainly here; its scores are the plain
    kernel's and the plain count's (groups of 1 to 6 heads: more than GROUP_CHUNK take two
    rounds)."""
    from references import dropped_by_runs

    from maskgraph.lowering.topk import bounded_bins

    b, hq, hkv, q, k = shape
    gen = torch.Generator().manual_seed(sum(shape) + bits)
    nw = -(-bits // 32)
    qw = torch.randint(-(2**31), 2**31 - 1, (b, hq, q, nw), generator=gen, dtype=torch.int32)
    kw = torch.randint(-(2**31), 2**31 - 1, (b, hkv, k, nw), generator=gen, dtype=torch.int32)
    if bits % 32:  # the unused high bits of the last word are 0, as hash_words packs them
        kw[..., -1] &= (1 << (bits % 32)) - 1
        qw[..., -1] &= (1 << (bits % 32)) - 1
    seg, nb = 128, bounded_bins(bits)
    exclude = None if runs is None else [q, 1, k, *(v for run in runs for v in run)]
    am = random_mask("per_query", b, hq, q, k, sum(shape)) if masked else None
    scores, hist = ha._hash_group_scores_hist(qw, kw, hkv, bits, seg, nb, exclude, am)
    assert torch.equal(scores, ha._hash_group_scores(qw, kw, hkv, bits, am))
    # the scores, plainly: bits − differing bits, the max over each group's query heads
    x = (qw.view(b, hkv, hq // hkv, q, 1, nw) ^ kw.view(b, hkv, 1, 1, k, nw)).long() & 0xFFFFFFFF
    differ = sum((x >> i) & 1 for i in range(32)).sum(-1)
    want = (bits - differ).amax(2).float()
    forbidden = torch.zeros_like(want, dtype=torch.bool)
    if masked:
        forbidden = (am == float("-inf")).expand(want.shape)
        assert forbidden.any() and not forbidden.all()
    assert torch.equal(scores, want.masked_fill(forbidden, float("-inf")))
    rows = scores.reshape(-1, k)
    drop = dropped_by_runs(rows.shape[0], k, q, 1, k, runs or []) | forbidden.reshape(-1, k)
    bins = torch.where(drop, 0, 1 + rows.nan_to_num(neginf=0).long())
    want = torch.zeros(rows.shape[0], -(-k // seg), nb, dtype=torch.int32)
    for r in range(rows.shape[0]):
        for s in range(want.shape[1]):
            for value in bins[r, s * seg : (s + 1) * seg].tolist():
                want[r, s, value] += 1
    assert hist.dtype == torch.int32 and torch.equal(hist, want)


@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("masked", ["none", "kernel"])
def test_hash_top_k_takes_the_kernels_histograms(q, masked, tmp_path, monkeypatch):
    """HashAttention over segments, grouped, on the kernel path: its score kernel writes the
    bounded top-k's histograms (the prior dropped there too) and the top-k launches no
    histogram pass of its own; the output is the torch path's. With an attention mask the
    kernel applies it (−inf, bin 0) and the same holds."""
    from maskgraph.lowering import topk as triton_topk
    from maskgraph.lowering.topk import bounded_bins

    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0)
    monkeypatch.setattr(triton_topk, "SEG_MIN", 64)  # K = 301: five segments, the last short
    launched = record_topk_launches(monkeypatch)
    made = []  # (keys per program, bins, mask applied) of each score kernel launched
    real = ha._launch_group_scores

    def recorded(*a, **kw):
        args = inspect.signature(real).bind(*a, **kw).arguments
        made.append((args["block"], args.get("nb", 0), args.get("mask") is not None))
        return real(*a, **kw)

    monkeypatch.setattr(ha, "_launch_group_scores", recorded)
    graph, qs, ks, vs, _ = sparse_case("hashattention", tmp_path, b=2, k=301, seed=17, q=q)
    am = None
    if masked != "none":  # padding of row 0 (inside the prior's sink too) and keys of row 1
        am = torch.zeros(2, 1, q, 301)
        am[0, ..., :9] = float("-inf")
        am[1, ..., 100:140] = float("-inf")
    masked_out = mg.compile(graph, mode="sparse", gqa="shared", kernel="torch")
    want = masked_out(qs, ks, vs, attention_mask=am, state=mg.State())
    assert not launched
    made.clear()
    fast = mg.compile(graph, mode="sparse", gqa="shared", kernel="triton")
    out = fast(qs, ks, vs, attention_mask=am, state=mg.State())
    assert "select_hist" not in launched and "select_write" in launched
    # one score kernel, eager as compiled, writing the histograms
    assert made == [(64, bounded_bins(64), masked == "kernel")]  # hat_bits 64
    assert ((out - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.parametrize(
    "op, padded",
    [
        pytest.param(op, padded, id=f"{'padded' if padded else ''}-{op}", marks=marks)
        for op in ("hashattention", "double_sparsity", "quest")
        for padded in (False, True)
        # compiling is the point: one case by default, every one with --runslow
        for marks in [() if (op, padded) == ("quest", False) else pytest.mark.slow]
    ],
)
def test_group_scores_compile_with_inductor(op, padded, tmp_path, monkeypatch):
    """The grouped kernels are custom operators: fullgraph torch.compile calls them (the Triton
    check is a module constant, not a call inside the traced code), with a padding mask too
    (passed to them), equal to the torch path."""
    graph, qs, ks, vs, _ = sparse_case(op, tmp_path, b=2, k=300, seed=9)
    am = None
    if padded:
        am = torch.zeros(2, 1, 1, 300, dtype=torch.bfloat16)
        am[1, ..., :70] = float("-inf")
    fast = mg.compile(graph, backend="inductor", mode="sparse", gqa="shared", kernel="triton")
    a = fast(qs, ks, vs, attention_mask=am, state=mg.State())
    plain = mg.compile(graph, mode="sparse", gqa="shared", kernel="torch")
    want = plain(qs, ks, vs, attention_mask=am, state=mg.State())
    assert ((a - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
def test_without_triton_the_lowering_takes_the_group_max(op, tmp_path, monkeypatch):
    """Where the kernel cannot run the group function returns None and the shared lowering
    reduces the per-head scores itself: the same output."""
    graph, qs, ks, vs, path = sparse_case(op, tmp_path, b=1, k=200, seed=11)
    with_kernel = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs, state=mg.State())
    module = {"hashattention": ha, "double_sparsity": ds, "quest": quest}[op]
    monkeypatch.setattr(module, "usable", lambda device: False)
    spec = mg.get_op(op)
    params = estimator(op, path)
    prep = {"labels": ks, "key_words": ks, "lo": ks, "hi": ks}
    assert spec.sparse.group_scores(None, prep, **params) is None
    without = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs, state=mg.State())
    assert ((with_kernel - without).norm() / without.norm()).item() < 1e-5


@pytest.mark.parametrize("small_max", [4096, 0], ids=["one_program", "segments"])
def test_integer_scores_with_ties_match_simulate_on_the_kernel_path(small_max, tmp_path, monkeypatch):
    """HashAttention's scores are agreement counts, tied everywhere: the Triton top-k, the torch
    top-k and simulate mode all break ties toward the lowest index, so all three agree. Over
    segments the top-k takes the bounded path (counts in [0, hat_bits], one bin each)."""
    from maskgraph.lowering import topk as triton_topk

    monkeypatch.setattr(triton_topk, "SMALL_MAX", small_max)
    b, hq, hkv, q, k = 2, 4, 2, 2, 1500
    gen = torch.Generator().manual_seed(11)
    qs, ks, vs = (torch.randn(b, h, n, D, generator=gen) for h, n in ((hq, q), (hkv, k), (hkv, k)))
    path = files(tmp_path, hq, hkv)["hashattention"]
    graph = mg.load_graph(
        "hashattention",
        overrides={"sink_size": 4, "window_size": 8, "heavy_size": 50, "hat_weights": path, "hat_bits": 64},
    )
    simulate = mg.compile(graph)(qs, ks, vs, state=mg.State())
    for kernel in ("triton", "torch"):
        out = mg.compile(graph, mode="sparse", kernel=kernel)(qs, ks, vs, state=mg.State())
        assert ((out - simulate).norm() / simulate.norm()).item() < 1e-5, kernel


@pytest.mark.parametrize("shape", SHAPES + [(1, 20, 1, 1, 70)], ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("bits", [4, 8, 3])
def test_double_sparsity_kernel_is_the_float64_score(shape, dtype, bits, tmp_path):
    """The grouped kernel (G = 2, 3, 1 and 20) against the score written out in float64 from
    the packed words: scaling·max_g (lo·Σ_c q_c + step·Σ_c code_c·q_c)."""
    b, hq, hkv, q, k = shape
    gen = torch.Generator().manual_seed(sum(shape) + bits)
    queries = torch.randn(b, hq, q, D, generator=gen).to(dtype)
    keys = torch.randn(b, hkv, k, D, generator=gen)
    params = {"channels": files(tmp_path, hq, hkv)["double_sparsity"], "group_factor": 2, "label_bits": bits}
    prep = mg.get_op("double_sparsity").prepare(keys, keys, params, {}, 0)
    env = Env(queries, keys, keys, None, D**-0.5, torch.arange(k - q, k), 0)
    made = ds.double_sparsity_group_scores(env, prep, **params)
    grouped, ranges = made.scores, made.ranges
    words, per = prep["labels"], ds.codes_per_word(bits)
    r = prep["idx"].shape[-1]
    codes = torch.stack([(words[..., c // per] >> ((c % per) * bits)) & (2**bits - 1) for c in range(r)], -1)
    g = hq // hkv
    ql = ds.query_labels(env, prep).double().view(b, hkv, g, q, 1, r)
    lo, step = prep["lo"].double().view(b, hkv, 1, 1, k), prep["step"].double().view(b, hkv, 1, 1, k)
    dots = (ql * codes.double().view(b, hkv, 1, 1, k, r)).sum(-1)
    exact = ((lo * ql.sum(-1) + step * dots) * D**-0.5).amax(2)
    assert grouped.shape == exact.shape and grouped.dtype == torch.float32
    torch.testing.assert_close(grouped.double(), exact, rtol=1e-5, atol=1e-5)
    # the bounds are the kernel's own (before the causal mask), per block of keys
    raw, _ = ds._ds_group_scores(
        ds.query_labels(env, prep), words, prep["lo"], prep["step"], q, bits, D**-0.5
    )
    block = ds._ds_block(1 << (g - 1).bit_length())
    assert torch.equal(ranges.long(), block_ranges(raw, block))
    kept = block_ranges(grouped, block)
    assert (kept[..., 0] >= ranges[..., 0]).all() and (kept[..., 1] <= ranges[..., 1]).all()


@pytest.mark.parametrize("bits, group_factor", [(3, 2), (8, 2), (1, 1), (4, 1)])
def test_double_sparsity_group_scores_for_other_packings(bits, group_factor, tmp_path):
    """Codes per word 10, 4, 32, 8 and labels over several words (R = 8 or 16 of D = 16):
    the kernel's unpacking equals the per-head scores' (torch) unpacking."""
    b, hq, hkv, q, k = 1, 4, 2, 2, 300
    gen = torch.Generator().manual_seed(bits)
    queries = torch.randn(b, hq, q, D, generator=gen)
    keys = torch.randn(b, hkv, k, D, generator=gen)
    params = {
        "channels": files(tmp_path, hq, hkv)["double_sparsity"],
        "group_factor": group_factor,
        "label_bits": bits,
    }
    spec = mg.get_op("double_sparsity")
    prep = spec.prepare(keys, keys, params, {}, 0)
    env = Env(queries, keys, keys, None, D**-0.5, torch.arange(k - q, k), 0)
    per_head = spec.sparse.scores(env, prep, **params).scores
    grouped = spec.sparse.group_scores(env, prep, **params).made
    want = per_head.view(b, hkv, hq // hkv, q, k).amax(2)
    torch.testing.assert_close(grouped, want, rtol=1e-5, atol=1e-5)


def head_scores_float64(op, env, prep, params) -> torch.Tensor:
    """Each query head's own scores (B, Hq, Q, K | P) written out plainly in float64 from the
    estimator's caches (HashAttention: agreeing bits, counted bit by bit)."""
    b, hq, q = env.B, env.Hq, env.Q
    hkv, g = env.Hkv, env.Hq // env.Hkv
    if op == "hashattention":
        qw = ha.query_words(env, prep).long().view(b, hkv, g, q, 1, -1)
        kw = prep["key_words"].long().view(b, hkv, 1, 1, env.K, -1)
        differ = qw ^ kw
        bits = sum(((differ >> i) & 1) for i in range(32)).sum(-1)
        return (params["hat_bits"] - bits).double().view(b, hq, q, env.K)
    if op == "quest":
        qd = env.queries.double().view(b, hkv, g, q, 1, D)
        lo, hi = prep["lo"].double(), prep["hi"].double()
        u = torch.maximum(qd * hi.view(b, hkv, 1, 1, -1, D), qd * lo.view(b, hkv, 1, 1, -1, D))
        return (u.sum(-1) * D**-0.5).view(b, hq, q, -1)
    bits, words = params["label_bits"], prep["labels"]
    per, r = ds.codes_per_word(bits), prep["idx"].shape[-1]
    codes = torch.stack([(words[..., c // per] >> ((c % per) * bits)) & (2**bits - 1) for c in range(r)], -1)
    ql = ds.query_labels(env, prep).double().view(b, hkv, g, q, 1, r)
    lo, step = prep["lo"].double().view(b, hkv, 1, 1, -1), prep["step"].double().view(b, hkv, 1, 1, -1)
    dots = (ql * codes.double().view(b, hkv, 1, 1, env.K, r)).sum(-1)
    return ((lo * ql.sum(-1) + step * dots) * D**-0.5).view(b, hq, q, env.K)


@pytest.mark.parametrize("shape", SHAPES + [(1, 20, 4, 1, 70)], ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
def test_head_scores_are_each_heads_own(op, dtype, shape, tmp_path):
    """``sparse_head_scores`` (the group kernels with one query head a row, reading key head
    h // G) against float64 scores written out per head, and their bounds per block; the
    causal rows end in −inf as the per-head torch scores do."""
    b, hq, hkv, q, k = shape
    spec, params, prep, env = estimator_case(op, dtype, shape, tmp_path, sum(shape) + 7)
    queries = env.queries
    made = spec.sparse.head_scores(env, prep, **params)
    own = made.made
    torch_made = spec.sparse.scores(env, prep, **params)
    torch_scores = torch_made.scores
    assert made.block == torch_made.block and own.shape == torch_scores.shape == (
        b,
        hq,
        q,
        torch_scores.shape[-1],
    )
    assert torch.equal(own == float("-inf"), torch_scores == float("-inf"))
    exact = head_scores_float64(op, env, prep, params)
    finite = own > float("-inf")
    if op == "hashattention":  # integer agreement counts: exact
        assert torch.equal(own[finite].double(), exact[finite])
    else:
        torch.testing.assert_close(own[finite].double(), exact[finite], rtol=1e-5, atol=1e-5)
    if op != "hashattention":  # the kernel's bounds hold every finite score of its block
        ranges = made.ranges() if callable(made.ranges) else made.ranges
        if op == "quest":  # 16-bit and G > 1: the tensor-core form, each head of a group
            kernel_block = quest._quest_block(quest._quest_dot(queries, prep["lo"], prep["hi"]))
        else:
            kernel_block = ds._ds_block(1)
        kept = block_ranges(own, kernel_block)
        assert ranges.shape == kept.shape
        assert (kept[..., 0] >= ranges[..., 0]).all() and (kept[..., 1] <= ranges[..., 1]).all()


@pytest.mark.parametrize("gqa", ["per_head", "shared"])
@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_quest_skips_pages_whose_allowed_keys_the_prior_holds(gqa, kernel, tmp_path, monkeypatch):
    """A page is eligible only if one of its keys is both allowed by the mask and outside the
    prior (simulate's rule, key by key): here page 73 (keys 292–295) has the best bound, key
    292 forbidden and 293–295 in the window. A mask applied per page by the score kernel and a
    prior dropped per page by the top-k would each keep it, wasting a page of the budget (whose
    keys are then all invalid); Quest's kernel checks both per key. The
    output is simulate's (per head) and the torch path's (shared)."""
    graph, qs, ks, vs, _ = sparse_case("quest", tmp_path, b=1, k=301, seed=23)
    # the page every head ranks first: its bound comes from the forbidden key 292 (keys 293-295
    # keep ordinary logits, so that the other pages' share of the output shows)
    ks[..., 292, :] = 20 * qs.mean((1, 2)).view(1, 1, D)
    am = torch.zeros(1, 1, 1, 301)
    am[..., 292] = float("-inf")
    run = {"attention_mask": am}
    got = mg.compile(graph, mode="sparse", gqa=gqa, kernel=kernel)(qs, ks, vs, state=mg.State(), **run)
    if gqa == "per_head":
        want = mg.compile(graph)(qs, ks, vs, state=mg.State(), **run)
    else:
        want = mg.compile(graph, mode="sparse", gqa=gqa, kernel="torch")(qs, ks, vs, state=mg.State(), **run)
    assert ((got - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.parametrize("shape", SHAPES + [(2, 8, 2, 1, 257)], ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("per_head", [False, True], ids=["grouped", "per_head"])
def test_quest_kernel_forbids_pages_of_the_prior_under_a_mask(per_head, dtype, shape, tmp_path):
    """Quest's ``excluding``: a page scores −inf unless one of its keys is allowed by the mask
    and outside the prior's runs (a sink and a window sliding over the queries), against the
    float64 rule written out key by key; the other pages keep the float64 bound."""
    from references import dropped_by_runs

    b, hq, hkv, q, k = shape
    spec, params, prep, env = estimator_case("quest", dtype, shape, tmp_path, sum(shape) + 5)
    am = random_mask("per_query", b, hq, q, k, sum(shape) + 1)
    am[..., :5], am[..., 5:16] = 0.0, float("-inf")  # page 0's allowed keys: the sink's
    am = am.to(dtype)
    env = Env(env.queries, env.keys, env.values, am, D**-0.5, env.q_pos, 0)
    runs = [(0, 5, 0), (k - q - 9, k - q + 1, 1)]  # sink 5, window 10 ending at query i's key
    made = (spec.sparse.head_scores if per_head else spec.sparse.group_scores)(env, prep, **params)
    got, ranges = made.excluding([q, 1, k, *(v for run in runs for v in run)])
    exact = head_scores_float64("quest", env, prep, params)
    pages = exact.shape[-1]
    drop = dropped_by_runs(q, k, q, 1, k, runs).view(1, 1, q, k)
    eligible = (am > float("-inf")).expand(b, hq, q, k) & ~drop
    padded = torch.zeros(b, hq, q, pages * 16, dtype=torch.bool)
    padded[..., :k] = eligible
    want = exact.masked_fill(~padded.view(b, hq, q, pages, 16).any(-1), float("-inf"))
    if not per_head:
        want = want.view(b, hkv, hq // hkv, q, pages).amax(2)
    assert torch.equal(got == float("-inf"), want == float("-inf"))
    assert (want[..., 0] == float("-inf")).all()  # the sink's page, by the sink alone
    finite = want > float("-inf")
    assert finite.any() and not finite.all()
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=1e-5, atol=1e-5)
    kept = block_ranges(got, quest._quest_block(quest._quest_dot(env.queries, prep["lo"], prep["hi"])))
    assert (kept[..., 0] >= ranges[..., 0]).all() and (kept[..., 1] <= ranges[..., 1]).all()


def random_mask(form: str, b: int, hq: int, q: int, k: int, seed: int) -> torch.Tensor:
    """An additive mask of ``form``: "padding" (B, 1, 1, K) a prefix per row, in row 0 33 keys
    (whole pages of 16 and part of one); "per_query" (B, 1, Q, K) that prefix, holes, and the
    causal end for Q > 1; "broadcast" (1, 1, 1, K) holes and a run; "per_head" (B, Hq, Q, K)
    holes and, in head 1, the run. Some allowed keys carry a finite negative bias (allowed all
    the same)."""
    gen = torch.Generator().manual_seed(seed)
    shape = {"padding": (b, 1, 1, k), "per_query": (b, 1, q, k), "broadcast": (1, 1, 1, k)}
    am = torch.zeros(shape.get(form, (b, hq, q, k)))
    am[torch.rand(am.shape, generator=gen) < 0.2] = -3.0e38  # finite: allowed
    if form in ("padding", "per_query"):
        for r in range(b):
            pad = 33 if r == 0 else int(torch.randint(0, k // 2 + 1, (1,), generator=gen))
            am[r, ..., :pad] = float("-inf")
    if form != "padding":
        am[torch.rand(am.shape, generator=gen) < 0.3] = float("-inf")
    if form == "broadcast":
        am[..., k // 3 : k // 3 + 40] = float("-inf")
    if form == "per_head":
        am[:, 1, :, k // 3 : k // 3 + 40] = float("-inf")
    if form == "per_query" and q > 1:
        am = am + torch.triu(torch.full((q, k), float("-inf")), k - q + 1)
    return am


def masked_reference(op, env, prep, params, per_head: bool) -> torch.Tensor:
    """The float64 scores of each query head (or their group max), −inf where the mask forbids
    the key (Quest: the page holds no key it allows), the rule written plainly."""
    exact = head_scores_float64(op, env, prep, params)
    allowed = (env.attention_mask > float("-inf")).expand(env.B, env.Hq, env.Q, env.K)
    if op == "quest":
        pages = exact.shape[-1]
        padded = torch.zeros(env.B, env.Hq, env.Q, pages * 16, dtype=torch.bool)
        padded[..., : env.K] = allowed
        allowed = padded.view(env.B, env.Hq, env.Q, pages, 16).any(-1)
    exact = exact.masked_fill(~allowed, float("-inf"))
    if per_head:
        return exact
    return exact.view(env.B, env.Hkv, env.G, env.Q, -1).amax(2)


@pytest.mark.parametrize("shape", SHAPES + [(2, 8, 2, 1, 257)], ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("form", ["padding", "per_query", "broadcast", "per_head"])
@pytest.mark.parametrize("op", ["hashattention", "double_sparsity", "quest"])
def test_estimator_kernels_apply_the_attention_mask(op, form, dtype, shape, tmp_path):
    """An additive attention mask given to the estimator kernels (grouped, and per query head;
    masks broadcast over batch, heads and queries, or not) forbids exactly the keys (Quest: the
    pages with no allowed key) the float64 reference forbids, leaves the other scores the
    reference's, and the kernel says it applied the mask. A mask that differs between the heads
    of a group is per-head only (the grouped scores are not taken with it)."""
    from maskgraph.lowering.keymask import kernel_mask

    b, hq, hkv, q, k = shape
    spec, params, prep, env = estimator_case(op, dtype, shape, tmp_path, sum(shape) + 11)
    am = random_mask(form, b, hq, q, k, sum(shape)).to(dtype)  # additive masks of 16 bits too
    env = Env(env.queries, env.keys, env.values, am, D**-0.5, env.q_pos, 0)
    assert (kernel_mask(env) is None) == (form == "per_head")
    for per_head in (True,) if form == "per_head" else (False, True):
        made = (spec.sparse.head_scores if per_head else spec.sparse.group_scores)(env, prep, **params)
        got = made.made
        want = masked_reference(op, env, prep, params, per_head)
        assert made.masked is True  # the kernel applied it
        assert torch.equal(got == float("-inf"), want == float("-inf"))
        finite = want > float("-inf")
        assert finite.any() and not finite.all()  # the case forbids some, keeps some
        if op == "hashattention":
            assert torch.equal(got[finite].double(), want[finite])
        else:
            torch.testing.assert_close(got[finite].double(), want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "op, q, padded",
    [
        pytest.param(
            op,
            q,
            padded,
            id=f"{name}-{op}",
            marks=pytest.mark.slow if q == 3 and op != "quest" else (),  # the longest to interpret
        )  # fmt: skip
        for q, padded, name in ((3, False, "Q3-unmasked"), (1, True, "Q1-padding-mask"))
        for op in ("hashattention", "double_sparsity", "quest")
    ],
)
def test_per_head_sparse_mode_uses_the_head_scores(op, q, padded, tmp_path, monkeypatch):
    """``gqa="per_head"`` scores each query head by the estimator's kernel (which applies the
    padding mask itself, so that the sink and window are dropped in a kernel in both cases: by
    the Triton top-k, or under a mask by Quest's score kernel) and equals simulate mode
    (K = 150: pages of 4 and key blocks end short)."""
    from maskgraph.lowering import topk as triton_topk

    graph, qs, ks, vs, _ = sparse_case(op, tmp_path, b=2, k=150, seed=17, q=q)
    mask = None
    if padded:  # row 1 starts with 5 padding keys
        mask = torch.zeros(2, 1, q, 150)
        mask[1, ..., :5] = float("-inf")
        mask = mask + torch.triu(torch.full((q, 150), float("-inf")), 150 - q + 1)
    spec = mg.get_op(op)
    calls, seen = [], []
    real = spec.sparse.head_scores
    spied = replace(spec.sparse, head_scores=lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(spec, "sparse", spied)
    real_ex = triton_topk.exclusion_args
    monkeypatch.setattr(triton_topk, "exclusion_args", lambda ex: ex and seen.append(ex) or real_ex(ex))
    simulate = mg.compile(graph)(qs, ks, vs, attention_mask=mask, state=mg.State())
    own = mg.compile(graph, mode="sparse", gqa="per_head", kernel="triton")(
        qs, ks, vs, attention_mask=mask, state=mg.State()
    )
    assert calls and seen
    assert ((own - simulate).norm() / simulate.norm()).item() < 1e-5
