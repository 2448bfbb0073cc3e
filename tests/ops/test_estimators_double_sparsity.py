"""Double Sparsity label-channel scores against a float64 reference; the channel file."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.double_sparsity import load_channels, save_channels

D = 8


def make(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
    )


def random_channels(layers, hkv, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.stack([torch.randperm(D, generator=gen) for _ in range(hkv)]) for _ in range(layers)]
    )


@pytest.fixture
def channel_file(tmp_path):
    def write(hkv, layers=2, seed=0):
        channels = random_channels(layers, hkv, seed)
        path = tmp_path / f"ch{hkv}_{layers}_{seed}.safetensors"
        save_channels(path, channels, {"model": "test", "layers": layers})
        return path, channels

    return write


def ds_scores(queries, keys, path, group_factor=2, label_bits=16, layer=0, am=None):
    spec = mg.get_op("double_sparsity")
    p = {"channels": str(path), "group_factor": group_factor, "label_bits": label_bits}
    prep = spec.prepare(keys, keys, p, {}, layer)
    k = keys.shape[2]
    env = Env(queries, keys, keys, am, D**-0.5, torch.arange(k - queries.shape[2], k), layer)
    return spec.fn(env, **p, prep=prep)


def reference_scores(queries, keys, channels, layer, r, bits):
    """float64: per key, its r label channels (quantised per key to 2**bits levels), dotted with
    the query's same channels, times scaling."""
    b, hq, nq, _ = queries.shape
    hkv, nk = keys.shape[1], keys.shape[2]
    out = torch.empty(b, hq, nq, nk, dtype=torch.float64)
    for i in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            chans = channels[layer, kv, :r].tolist()
            for j in range(nk):
                lab = keys[i, kv, j, chans].double()
                if bits < 16:
                    lo, hi = lab.min(), lab.max()
                    step = (hi - lo) / (2**bits - 1)
                    lab = lo + torch.round((lab - lo) / step) * step
                out[i, h, :, j] = queries[i, h][:, chans].double() @ lab * D**-0.5
    return out


@pytest.mark.parametrize("b,hq,hkv,q,k", [(1, 4, 2, 1, 37), (2, 6, 2, 5, 29), (1, 2, 1, 9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_factor,bits", [(2, 16), (4, 4), (1, 8)])
def test_scores_match_float64_reference(b, hq, hkv, q, k, dtype, group_factor, bits, channel_file):
    path, channels = channel_file(hkv)
    queries, keys = make(b, hq, hkv, q, k, dtype, seed=k + bits)
    for layer in (0, 1):
        got = ds_scores(queries, keys, path, group_factor, bits, layer)
        want = reference_scores(queries, keys, channels, layer, D // group_factor, bits)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_channels_are_per_layer(channel_file):
    path, channels = channel_file(2)
    assert not torch.equal(channels[0], channels[1])
    queries, keys = make(1, 4, 2, 3, 20, seed=1)
    assert not torch.equal(ds_scores(queries, keys, path, layer=0), ds_scores(queries, keys, path, layer=1))


@pytest.mark.parametrize("q,k", [(1, 40), (5, 33), (20, 20)])
def test_all_channels_16_bits_is_exact_topk(q, k, channel_file):
    path, _ = channel_file(2)
    o = {"sink_size": 2, "window_size": 3, "heavy_size": 7}
    ds = mg.load_graph(
        "graphs/double_sparsity.yaml",
        overrides={**o, "group_factor": 1, "label_bits": 16, "ds_channels": str(path)},
    )
    oracle = mg.load_graph("graphs/oracle_topk.yaml", overrides=o)
    queries, keys = make(2, 4, 2, q, k, seed=q + k)
    pos = torch.arange(k - q, k).view(-1, 1)
    am = torch.zeros(1, 1, q, k).masked_fill(torch.arange(k).view(1, -1) > pos, float("-inf"))
    for layer in (0, 1):
        got = mg.compile(ds).mask(queries, keys, keys, attention_mask=am, layer_idx=layer)
        assert torch.equal(got, mg.compile(oracle).mask(queries, keys, keys, attention_mask=am))


def test_round_trip_same_masks(channel_file, tmp_path):
    path, channels = channel_file(2)
    loaded, meta = load_channels(path)
    assert torch.equal(loaded, channels) and meta == {
        "model": "test",
        "layers": "2",
        "kind": "double_sparsity",
    }
    again = tmp_path / "again.safetensors"
    save_channels(again, loaded, meta)
    o = {"sink_size": 2, "window_size": 2, "heavy_size": 6}
    queries, keys = make(1, 4, 2, 3, 30, seed=2)
    masks = [
        mg.compile(mg.load_graph("graphs/double_sparsity.yaml", overrides={**o, "ds_channels": str(p)})).mask(
            queries, keys, keys, layer_idx=1
        )
        for p in (path, again)
    ]
    assert torch.equal(masks[0], masks[1]) and masks[0].sum() > 0


def _write(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "tensors,meta,message",
    [
        ({"channels": random_channels(1, 2)}, {"kind": "hashattention"}, "kind"),
        ({"channels": random_channels(1, 2)}, {}, "kind"),
        ({"channels": random_channels(1, 2).int()}, {"kind": "double_sparsity"}, "int64"),
        ({"channels": random_channels(1, 2)[0]}, {"kind": "double_sparsity"}, "int64 \\(L, Hkv, D\\)"),
        ({"channels": torch.zeros(1, 2, D, dtype=torch.int64)}, {"kind": "double_sparsity"}, "permutation"),
        (
            {"channels": random_channels(1, 2), "more": torch.zeros(1)},
            {"kind": "double_sparsity"},
            "only 'channels'",
        ),
    ],
)
def test_malformed_file_rejected(tensors, meta, message, tmp_path):
    path = tmp_path / "bad.safetensors"
    _write(path, tensors, meta)
    with pytest.raises(mg.CalibrationError, match=message):
        load_channels(path)


def test_unreadable_file_and_mismatches_rejected(channel_file, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    with pytest.raises(mg.CalibrationError, match="cannot read"):
        load_channels(junk)
    path, _ = channel_file(2, layers=1)
    queries, keys = make(1, 4, 2, 1, 10)
    with pytest.raises(mg.CalibrationError, match="layer 2 requested"):
        ds_scores(queries, keys, path, layer=2)
    with pytest.raises(mg.CalibrationError, match=r"\(Hkv, D\)"):
        ds_scores(*make(1, 4, 1, 1, 10), path)
    with pytest.raises(mg.CalibrationError, match="group_factor=16"):
        ds_scores(queries, keys, path, group_factor=16)


@pytest.mark.parametrize("bits", range(1, 9))
def test_packed_codes_round_trip(bits):
    """Codes packed 32 // bits to an int32 word (the top bit used too) come back exactly."""
    from maskgraph.ops.zoo.double_sparsity import pack_codes, unpack_codes

    gen = torch.Generator().manual_seed(bits)
    r = 13  # not a multiple of any codes-per-word
    codes = torch.randint(0, 2**bits, (2, 3, 17, r), generator=gen)
    codes[0, 0, 0] = 2**bits - 1  # every bit set
    words = pack_codes(codes.float(), bits)
    assert words.dtype == torch.int32 and words.shape[-1] == -(-r // (32 // bits))
    assert torch.equal(unpack_codes(words, r, bits).long(), codes)
