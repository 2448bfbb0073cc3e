"""Calibration: capture of q/k from a HF model, Double Sparsity channel ranking, HashAttention
training, the file formats and the ``maskgraph calibrate`` command line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from maskgraph.calibrate import (
    HashConfig,
    calibrate_double_sparsity,
    calibrate_hashattention,
    capture_qk,
    capturing,
    load_channels,
    load_hash_weights,
    rank_channels,
)
from maskgraph.calibrate import hashattention as hat
from maskgraph.calibrate.double_sparsity import (
    ImportanceAccumulator,
    diagonal_importance,
    pairwise_importance,
)
from maskgraph.calibrate.text import ByteTokenizer, encode, windows
from maskgraph.cli.main import main as cli_main
from maskgraph.errors import CalibrationError

TEXT = "The keeper climbed the stair of the lighthouse every evening at dusk. " * 40


@pytest.fixture(scope="module")
def tiny():
    """A random LlamaForCausalLM: 2 layers, 4 query / 2 KV heads, head dim 16."""
    from maskgraph.hf.models import tiny_model

    return tiny_model("llama", seed=0)


# ----------------------------------------------------------------------------- capture


def test_capture_shapes_and_model_unchanged(tiny):
    ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = tiny(input_ids=ids).logits
    cap = capture_qk(tiny, ids, batch_size=2)
    assert cap.num_layers == 2
    for q, k in zip(cap.queries, cap.keys):
        assert q.shape == (3, 4, 24, 16) and k.shape == (3, 2, 24, 16)
        assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert tiny.config._attn_implementation == "sdpa"
    with torch.no_grad():
        after = tiny(input_ids=ids).logits
    assert torch.equal(before, after)


def test_capture_keeps_causal_mask(tiny):
    # With the mask lost, logits of the first positions would depend on later tokens.
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 7) % 256
    outs = []
    with torch.no_grad(), capturing(tiny, lambda layer, q, k: None):
        for x in (ids, changed):
            outs.append(tiny(input_ids=x, use_cache=False).logits)
    torch.testing.assert_close(outs[0][:, :10], outs[1][:, :10])
    assert not torch.allclose(outs[0][:, 10:], outs[1][:, 10:])


def test_capture_is_post_rope(tiny):
    # Identical tokens give identical pre-RoPE queries/keys in layer 0, so q_t·k_s depends on
    # t − s only after RoPE, and is not constant.
    ids = torch.full((1, 12), 42)
    cap = capture_qk(tiny, ids)
    q, k = cap.queries[0][0, 0].double(), cap.keys[0][0, 0].double()
    dots = q @ k.T
    torch.testing.assert_close(dots[1:, 1:], dots[:-1, :-1])
    assert (dots[5, :5] - dots[5, 0]).abs().max() > 1e-3


def test_capture_restores_implementation_on_error(tiny):
    def boom(layer, q, k):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), capturing(tiny, boom):
        tiny(input_ids=torch.zeros(1, 4, dtype=torch.long))
    assert tiny.config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------- Double Sparsity


def _importance_reference(q, k, statistic):
    """Plain float64 loops: mean over g, causal pairs (or same-token pairs) of |q_c|·|k_c|."""
    b, hq, length, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    out = torch.zeros(b, hkv, d, dtype=torch.float64)
    count = 0
    for bi in range(b):
        for h in range(hkv):
            n = 0
            for gi in range(g):
                for t in range(length):
                    for s in range(t + 1) if statistic == "pairwise" else (t,):
                        out[bi, h] += (q[bi, h * g + gi, t].double() * k[bi, h, s].double()).abs()
                        n += 1
            count = n
    return out, count


@pytest.mark.parametrize("statistic", ["pairwise", "diagonal"])
@pytest.mark.parametrize("hq,hkv", [(4, 2), (6, 2), (3, 3)])
def test_importance_matches_reference(statistic, hq, hkv):
    gen = torch.Generator().manual_seed(hq * 10 + hkv)
    q, k = torch.randn(2, hq, 7, 8, generator=gen), torch.randn(2, hkv, 7, 8, generator=gen)
    fn = pairwise_importance if statistic == "pairwise" else diagonal_importance
    total, count = fn(q, k)
    ref, ref_count = _importance_reference(q, k, statistic)
    assert count == ref_count
    torch.testing.assert_close(total, ref)


def test_importance_bf16_inputs():
    gen = torch.Generator().manual_seed(3)
    q, k = (
        torch.randn(1, 4, 9, 8, generator=gen).bfloat16(),
        torch.randn(1, 2, 9, 8, generator=gen).bfloat16(),
    )
    total, _ = pairwise_importance(q, k)
    ref, _ = _importance_reference(q.double(), k.double(), "pairwise")
    torch.testing.assert_close(total, ref)


def test_planted_channel_ranks_first():
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 4, 20, 16, generator=gen), torch.randn(1, 2, 20, 16, generator=gen)
    k[:, 1, :, 5] *= 100.0  # KV head 1: channel 5 dominates q·k
    q[:, 0:2, :, 11] *= 100.0  # query heads of KV head 0: channel 11 dominates
    acc = ImportanceAccumulator("pairwise")
    acc(0, q, k)
    channels = rank_channels(acc.importance())
    assert channels[0, 1, 0] == 5 and channels[0, 0, 0] == 11
    ref, _ = _importance_reference(q, k, "pairwise")
    assert torch.equal(channels[0], torch.argsort(ref[0], dim=-1, descending=True, stable=True))


def test_accumulator_is_mean_over_batches():
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(3, 4, 6, 8, generator=gen), torch.randn(3, 2, 6, 8, generator=gen)
    one, split = ImportanceAccumulator(), ImportanceAccumulator()
    one(0, q, k)
    split(0, q[:1], k[:1])
    split(0, q[1:], k[1:])
    torch.testing.assert_close(one.importance(), split.importance())
    ref, count = _importance_reference(q, k, "pairwise")
    torch.testing.assert_close(one.importance()[0], ref.sum(0) / (count * 3))


def test_rank_channels_ties_lower_index_first():
    imp = torch.tensor([[1.0, 3.0, 3.0, 0.5]])
    assert rank_channels(imp).tolist() == [[1, 2, 0, 3]]


def test_calibrate_double_sparsity_per_layer_and_file_format(tiny, tmp_path):
    tok = ByteTokenizer(256)
    result = calibrate_double_sparsity(tiny, tok, TEXT, tokens=96, window=32, model_name="tiny")
    assert result.channels.shape == (2, 2, 16) and result.channels.dtype == torch.int64
    # Reference: capture the same windows, rank the plain statistic per layer.
    cap = capture_qk(tiny, windows(encode(tok, TEXT), 96, 32))
    for layer in range(2):
        ref, _ = _importance_reference(cap.queries[layer], cap.keys[layer], "pairwise")
        expected = torch.argsort(ref.sum(0), dim=-1, descending=True, stable=True)
        assert torch.equal(result.channels[layer], expected)
    assert not torch.equal(result.channels[0], result.channels[1])  # per layer, not layer 0's

    path = result.save(tmp_path / "sub" / "ds.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["channels"]
        meta = f.metadata()
        assert f.get_tensor("channels").dtype == torch.int64
    assert {"kind", "model", "num_layers", "num_kv_heads", "head_dim", "tokens"} <= set(meta)
    assert meta["kind"] == "double_sparsity" and meta["model"] == "tiny"
    assert (meta["num_layers"], meta["num_kv_heads"], meta["head_dim"], meta["tokens"]) == (
        "2",
        "2",
        "16",
        "96",
    )
    channels, _ = load_channels(path)
    assert torch.equal(channels, result.channels)


# ----------------------------------------------------------------------------- HashAttention pieces


def test_group_scores_and_bit_agreement_match_reference():
    gen = torch.Generator().manual_seed(6)
    weights = hat.random_layer(4, 2, 8, HashConfig(hat_bits=12, hidden=10), gen)
    for side in ("query", "key"):
        weights[side]["b1"] += torch.randn(weights[side]["b1"].shape, generator=gen)
        weights[side]["b2"] += torch.randn(weights[side]["b2"].shape, generator=gen)
    q, k = torch.randn(4, 5, 8, generator=gen), torch.randn(2, 9, 8, generator=gen)
    got = hat.bit_agreement(q, k, weights)

    def bits(x, m, h):
        x = x.double()
        hidden = torch.nn.functional.silu(x @ m["w1"][h].double() + m["b1"][h].double())
        return (hidden @ m["w2"][h].double() + m["b2"][h].double()) > 0

    for h in range(4):
        bq, bk = bits(q[h], weights["query"], h), bits(k[h // 2], weights["key"], h // 2)
        ref = (bq[:, None, :] == bk[None, :, :]).sum(-1).float()
        assert torch.equal(got[h], ref)


def test_export_folds_standardisation():
    gen = torch.Generator().manual_seed(7)
    net = hat.HeadMLPs(3, 8, 6, 5, gen)
    mean, std = torch.randn(3, 8, generator=gen), torch.rand(3, 8, generator=gen) + 0.5
    x = torch.randn(3, 11, 8, generator=gen)
    exported = net.export(mean, std)
    torch.testing.assert_close(hat.mlp_logits(x, exported), net((x - mean[:, None]) / std[:, None]).detach())


def test_expected_recall_with_ties_matches_hand_computation():
    scores = torch.tensor([[[5.0, 3.0, 3.0, 3.0, 1.0, 9.0]]])
    cand = torch.tensor([[True, True, True, True, True, False]])  # last key not a candidate
    target = torch.tensor([[[True, True, False, False, False, False]]])
    # k=2: key 0 is above the 2nd score; one of keys 1..3 (tied) is drawn: P(key 1) = 1/3.
    r = hat.expected_recall(scores, target, cand, 2)
    torch.testing.assert_close(r, torch.tensor([[(1 + 1 / 3) / 2]]))


def test_candidates_exclude_sink_and_local():
    cand = hat.candidate_mask(torch.tensor([10]), 12, sink=2, local=3)
    assert cand[0].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7]


def _planted(n=4, hq=4, hkv=2, length=160, d=16, clusters=8, seed=0):
    """Keys around ``clusters`` centres per KV head; each query near one centre of its KV head."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(hkv, clusters, d, generator=g)
    centres = 3 * centres / centres.norm(dim=-1, keepdim=True)
    heads = torch.arange(hkv)[None, :, None]
    keys = centres[heads, torch.randint(clusters, (n, hkv, length), generator=g)]
    keys = keys + 0.5 * torch.randn(n, hkv, length, d, generator=g)
    kv_of = (torch.arange(hq) // (hq // hkv))[None, :, None]
    queries = centres[kv_of, torch.randint(clusters, (n, hq, length), generator=g)]
    queries = queries + 0.5 * torch.randn(n, hq, length, d, generator=g)
    return queries, keys


def test_training_beats_chance_and_untrained_on_planted_clusters():
    # Chance recall is top_k / candidates ≈ 0.13. The exact top-8 of a query almost always lies
    # in its own cluster (~1/8 of the candidates), so hashes that only recover the cluster
    # reach ≈ 0.9; untrained random MLPs stay near chance (0.14 with these seeds). 0.45 is
    # halfway: trained codes must carry the cluster structure, on held-out windows.
    q, k = _planted()
    cfg = HashConfig(
        hat_bits=16,
        hidden=32,
        top_k=8,
        sink=2,
        local=8,
        steps=80,
        lr=3e-3,
        queries_per_step=64,
        negatives=64,
        hard_negatives=8,
    )
    weights = hat.train_layer(q[:3], k[:3], cfg)
    trained = hat.evaluate_layer(weights, q[3:], k[3:], cfg)
    untrained = hat.evaluate_layer(
        hat.random_layer(4, 2, 16, cfg, torch.Generator().manual_seed(1)), q[3:], k[3:], cfg
    )
    assert 0.10 < trained.random < 0.16
    assert trained.recall > 0.45 > untrained.recall + 0.2


def test_training_rejects_short_windows():
    q, k = torch.randn(2, 4, 20, 8), torch.randn(2, 2, 20, 8)
    with pytest.raises(CalibrationError, match="too short"):
        hat.train_layer(q, k, HashConfig(top_k=8, local=8))


def test_calibrate_hashattention_and_round_trip(tiny, tmp_path):
    cfg = HashConfig(
        hat_bits=8,
        hidden=12,
        top_k=4,
        sink=1,
        local=4,
        steps=3,
        queries_per_step=16,
        negatives=8,
        hard_negatives=4,
    )
    result = calibrate_hashattention(
        tiny, ByteTokenizer(256), TEXT, tokens=96, window=32, config=cfg, model_name="tiny"
    )
    assert len(result.reports) == 2
    path = result.save(tmp_path / "hat.safetensors")
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        meta = f.metadata()
        shapes = {n: tuple(f.get_tensor(n).shape) for n in names}
    expected = {}
    for layer in range(2):
        for side, heads in (("query", 4), ("key", 2)):
            expected[f"layer{layer}.{side}.w1"] = (heads, 16, 12)
            expected[f"layer{layer}.{side}.b1"] = (heads, 12)
            expected[f"layer{layer}.{side}.w2"] = (heads, 12, 8)
            expected[f"layer{layer}.{side}.b2"] = (heads, 8)
    assert shapes == expected
    assert (meta["kind"], meta["hat_bits"], meta["hidden"], meta["model"]) == (
        "hashattention",
        "8",
        "12",
        "tiny",
    )
    assert float(meta["recall"]) == pytest.approx(result.recall, abs=1e-4)
    assert len(json.loads(meta["recall_per_layer"])) == 2
    loaded, _ = load_hash_weights(path)
    for layer in range(2):
        for side in ("query", "key"):
            for part in ("w1", "b1", "w2", "b2"):
                assert torch.equal(loaded[layer][side][part], result.weights[layer][side][part])


def test_hashattention_needs_a_held_out_window(tiny):
    with pytest.raises(CalibrationError, match="at least 2 windows"):
        calibrate_hashattention(tiny, ByteTokenizer(256), TEXT, tokens=32, window=32)


def test_text_too_short_is_an_error():
    with pytest.raises(CalibrationError, match="fewer than"):
        windows(torch.arange(10), 20, 5)


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "argv", [["calibrate"], ["calibrate", "double-sparsity"], ["calibrate", "hashattention"]]
)
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main([*argv, "--help"])
    assert exc.value.code == 0
    assert "--model" in capsys.readouterr().out or argv == ["calibrate"]


def test_cli_runs_on_tiny_model(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    ds, hf = tmp_path / "ds.safetensors", tmp_path / "hat.safetensors"
    common = [
        "--model",
        "tiny-llama",
        "--text",
        str(text),
        "--tokens",
        "96",
        "--window",
        "32",
        "--no-progress",
    ]
    assert cli_main(["calibrate", "double-sparsity", *common, "--out", str(ds)]) == 0
    channels, meta = load_channels(ds)
    assert channels.shape == (2, 2, 16) and meta["model"] == "tiny-llama"
    hat_args = [
        "--steps",
        "2",
        "--top-k",
        "4",
        "--local",
        "4",
        "--sink",
        "1",
        "--hat-bits",
        "8",
        "--hidden",
        "8",
        "--hard-negatives",
        "4",
    ]
    assert cli_main(["calibrate", "hashattention", *common, *hat_args, "--out", str(hf)]) == 0
    out = capsys.readouterr().out
    assert "held-out top-4 recall" in out and str(hf) in out
    weights, meta = load_hash_weights(hf)
    assert len(weights) == 2 and meta["hat_bits"] == "8"


HAT_SMALL = [
    "--steps",
    "2",
    "--top-k",
    "4",
    "--local",
    "4",
    "--sink",
    "1",
    "--hat-bits",
    "8",
    "--hidden",
    "8",
]


@pytest.mark.parametrize(
    "method, calibrate_args, graph_args",
    [
        ("double-sparsity", [], []),
        ("hashattention", [*HAT_SMALL, "--hard-negatives", "4"], ["-p", "hat_bits=8"]),
    ],
)
def test_calibrate_then_show_masks_finds_the_default_file(
    method, calibrate_args, graph_args, tmp_path, monkeypatch, capsys
):
    """``maskgraph calibrate METHOD --model tiny-llama`` writes its default file, and a command
    running the shipped graph on that model then finds it without -p; before, the error names
    that file and the command."""
    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path / "cache"))
    kind = method.replace("-", "_")
    path = tmp_path / "cache" / "calibration" / "tiny-llama" / f"{kind}.safetensors"
    png = tmp_path / "masks.png"
    small = ["-p", "sink_size=2", "-p", "window_size=4", "-p", "heavy_size=6", *graph_args]
    show = ["show", kind, "--mask", "--model", "tiny-llama", *small, "-o", str(png)]
    assert cli_main(show) == 1
    err = capsys.readouterr().err
    assert str(path) in err and f"`maskgraph calibrate {method} --model tiny-llama`" in err
    tokens = ["--tokens", "96", "--window", "32", "--no-progress"]
    assert cli_main(["calibrate", method, "--model", "tiny-llama", *tokens, *calibrate_args]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    assert cli_main(show) == 0
    out, err = capsys.readouterr()
    assert png.is_file() and f"wrote {png}" in out and "heavy" in out
    assert out.startswith(f"{kind} on tiny-llama") and "\r" not in err  # progress: whole lines only


def test_cli_missing_text_is_a_clean_error(tmp_path, capsys):
    code = cli_main(
        ["calibrate", "double-sparsity", "--model", "tiny-llama", "--text", str(tmp_path / "none.txt")]
    )
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def test_shipped_graphs_run_on_calibrated_files(tiny, tmp_path):
    import maskgraph as mg

    tok = ByteTokenizer(256)
    ds = calibrate_double_sparsity(tiny, tok, TEXT, tokens=96, window=32).save(tmp_path / "ds.safetensors")
    cfg = HashConfig(
        hat_bits=8,
        hidden=8,
        top_k=4,
        sink=1,
        local=4,
        steps=2,
        queries_per_step=8,
        negatives=8,
        hard_negatives=4,
    )
    hf = calibrate_hashattention(tiny, tok, TEXT, tokens=96, window=32, config=cfg).save(
        tmp_path / "hat.safetensors"
    )
    gen = torch.Generator().manual_seed(8)
    q, k, v = (
        torch.randn(1, 4, 3, 16, generator=gen),
        torch.randn(1, 2, 40, 16, generator=gen),
        torch.randn(1, 2, 40, 16, generator=gen),
    )
    small = {"sink_size": 2, "window_size": 4, "heavy_size": 6}  # 2 + 4 + 6 keys per row
    for name, extra in (
        ("double_sparsity", {"ds_channels": str(ds)}),
        ("hashattention", {"hat_weights": str(hf), "hat_bits": 8}),
    ):
        attn = mg.compile(mg.load_graph(name, overrides={**small, **extra}))
        for layer in (0, 1):
            mask = attn.mask(q, k, v, layer_idx=layer)
            assert mask.shape == (1, 4, 3, 40)
            assert ((mask > 0).sum(-1) == 12).all() and torch.isfinite(attn(q, k, v, layer_idx=layer)).all()


def test_cli_default_text(tmp_path):
    out = tmp_path / "ds.safetensors"
    argv = ["calibrate", "double-sparsity", "--model", "tiny-llama", "--tokens", "64", "--window", "32"]
    assert cli_main([*argv, "--no-progress", "--out", str(out)]) == 0
    _, meta = load_channels(out)
    assert meta["text"] == "marrow_point.txt" and meta["tokens"] == "64"


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_capture_other_architectures(arch):
    from maskgraph.hf.models import tiny_model

    model = tiny_model(arch)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    cap = capture_qk(model, ids)
    assert [q.shape for q in cap.queries] == [(1, 4, 10, 16)] * 2
    assert [k.shape for k in cap.keys] == [(1, 2, 10, 16)] * 2
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_calibrated_operators_are_the_ones_that_declare_it():
    """Which operators read a calibration file comes from the operators themselves (the
    lookup of default files names none); a declared kind that calibrate cannot make is an
    error naming it."""
    import maskgraph as mg
    from maskgraph.calibrate.defaults import calibrated_op
    from maskgraph.errors import CalibrationError
    from maskgraph.registry import REGISTRY

    declared = {name: spec.calibration for name, spec in REGISTRY.items() if spec.calibration}
    assert declared == {"double_sparsity": "channels", "hashattention": "weights"}
    assert calibrated_op("quest") is None
    made = calibrated_op("hashattention")
    assert (made.param, made.command) == ("weights", "hashattention")
    spec = mg.get_op("quest")
    try:
        object.__setattr__(spec, "calibration", "page_size")
        with pytest.raises(CalibrationError, match="'quest'"):
            calibrated_op("quest")
    finally:
        object.__setattr__(spec, "calibration", None)
