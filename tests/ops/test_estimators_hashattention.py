"""HashAttention: bit-agreement scores against a float64 reference; the weights file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.hashattention import (
    load_hash_weights,
    pack_bits,
    popcount32,
    random_hash_weights,
    save_hash_weights,
)

D = 8
BITS = 40  # two packed words


def make(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
    )


def ha_scores(queries, keys, path, bits=BITS, layer=0, slot=None):
    spec = mg.get_op("hashattention")
    p = {"weights": str(path), "hat_bits": bits}
    prep = spec.prepare(keys, keys, p, {} if slot is None else slot, layer)
    k = keys.shape[2]
    env = Env(queries, keys, keys, None, D**-0.5, torch.arange(k - queries.shape[2], k), layer)
    return spec.fn(env, **p, prep=prep)


def reference_bits(x, w1, b1, w2, b2):
    """float64 per-head MLP sign bits, written plainly: x (n, D) for one head -> (n, bits)."""
    h = x.double() @ w1.double() + b1.double()
    h = h * torch.sigmoid(h)
    return (h @ w2.double() + b2.double()) > 0


def reference_scores(queries, keys, weights):
    b, hq, nq, _ = queries.shape
    hkv, nk = keys.shape[1], keys.shape[2]
    out = torch.empty(b, hq, nq, nk, dtype=torch.float64)
    for i in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            qb = reference_bits(queries[i, h], *(weights[f"query.{p}"][h] for p in ("w1", "b1", "w2", "b2")))
            kb = reference_bits(keys[i, kv], *(weights[f"key.{p}"][kv] for p in ("w1", "b1", "w2", "b2")))
            out[i, h] = (qb[:, None, :] == kb[None, :, :]).sum(-1).double()
    return out


@pytest.fixture
def weights_file(tmp_path):
    def write(hq, hkv, layers=2, seed=0, suffix=".safetensors"):
        w = random_hash_weights(layers, hq, hkv, D, BITS, 6, seed=seed)
        path = tmp_path / f"w{hq}_{hkv}_{layers}_{seed}{suffix}"
        save_hash_weights(path, w, {"model": "test"})
        return path, w

    return write


@pytest.mark.parametrize("b,hq,hkv,q,k", [(1, 4, 2, 1, 37), (2, 6, 2, 5, 29), (1, 2, 1, 9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layer", [0, 1])
def test_scores_match_float64_reference(b, hq, hkv, q, k, dtype, layer, weights_file):
    path, w = weights_file(hq, hkv)
    queries, keys = make(b, hq, hkv, q, k, dtype, seed=k + layer)
    got = ha_scores(queries, keys, path, layer=layer)
    assert torch.equal(got.double(), reference_scores(queries, keys, w[layer]))


def test_layers_use_their_own_weights(weights_file):
    path, _ = weights_file(4, 2)
    queries, keys = make(1, 4, 2, 3, 30, seed=1)
    assert not torch.equal(ha_scores(queries, keys, path, layer=0), ha_scores(queries, keys, path, layer=1))


def test_popcount_and_packing():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2**32, (2000,), generator=gen, dtype=torch.int64)
    x[:3] = torch.tensor([0, 2**32 - 1, 2**31])
    assert popcount32(x).tolist() == [bin(int(v)).count("1") for v in x]
    as_int32 = torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)  # the same 32 bits
    assert popcount32(as_int32).tolist() == [bin(int(v)).count("1") for v in x]
    bits = torch.rand(5, 70, generator=gen) < 0.5
    words = pack_bits(bits)
    assert words.shape == (5, 3) and words.dtype == torch.int32
    unpacked = [[(int(words[r, j // 32]) >> (j % 32)) & 1 for j in range(70)] for r in range(5)]
    assert torch.equal(torch.tensor(unpacked, dtype=torch.bool), bits)


def unpack(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 (…, W) -> bool (…, bits): bit j of word w is unit 32·w + j."""
    shifts = torch.arange(32, dtype=torch.int64)
    raw = (words.long().unsqueeze(-1) >> shifts) & 1
    return raw.flatten(-2)[..., :bits].bool()


@pytest.mark.parametrize(
    "b,h,n,d,hidden,bits,dtype",
    [
        (1, 4, 1, 16, 32, 32, torch.float32),  # one word, one block of hidden units
        (2, 3, 3, 20, 37, 40, torch.float32),  # D, hidden and bits no power of two; two words
        (1, 2, 16, 8, 70, 70, torch.bfloat16),  # three words, bf16 rows
        (2, 2, 1, 128, 200, 5, torch.float32),  # fewer bits than a word; hidden in two tiles
        (1, 2, 2, 16, 40, 300, torch.bfloat16),  # ten words: the (hidden, bits) tile narrows
    ],
)
def test_hash_words_kernel_matches_float64(b, h, n, d, hidden, bits, dtype):
    """The Triton MLP-and-pack kernel (Triton's interpreter here) against the plain float64 MLP:
    every unit not within rounding of 0 has the reference's sign, and the words hold them."""
    from maskgraph.ops.zoo.hashattention import _hash_words

    gen = torch.Generator().manual_seed(b * 1000 + n * 10 + bits)
    # the newest rows of a longer cache, as a growing cache hands them over: a strided view
    x = torch.randn(b, h, n + 7, d, generator=gen).to(dtype)[:, :, 7:]
    w1 = torch.randn(h, d, hidden, generator=gen) / d**0.5
    b1 = torch.randn(h, hidden, generator=gen) * 0.1
    w2 = torch.randn(h, hidden, bits, generator=gen) / hidden**0.5
    b2 = torch.randn(h, bits, generator=gen) * 0.1
    got = unpack(_hash_words(x, w1, b1, w2, b2), bits)
    assert got.shape == (b, h, n, bits)
    hid = torch.einsum("bhnd,hdk->bhnk", x.double(), w1.double()) + b1.double()[:, None]
    hid = hid * torch.sigmoid(hid)
    out = torch.einsum("bhnk,hkc->bhnc", hid, w2.double()) + b2.double()[:, None]
    clear = out.abs() > 1e-4
    assert clear.float().mean() > 0.99  # the comparison covers nearly every unit
    assert torch.equal(got[clear], (out > 0)[clear])
    assert got.any() and not got.all()


def test_signatures_packed_in_state(weights_file):
    path, _ = weights_file(4, 2)
    queries, keys = make(1, 4, 2, 1, 20)
    slot: dict = {}
    ha_scores(queries, keys, path, slot=slot)
    assert slot["key_words"].dtype == torch.int32 and slot["key_words"].shape == (1, 2, 20, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_same_masks(suffix, weights_file, tmp_path):
    path, w = weights_file(4, 2, suffix=suffix)
    loaded, meta = load_hash_weights(path)
    assert meta["kind"] == "hashattention" and meta["hat_bits"] == str(BITS) and meta["model"] == "test"
    assert meta["hidden"] == "6" and sorted(loaded) == [0, 1]
    for layer in (0, 1):
        for name, t in w[layer].items():
            assert torch.equal(loaded[layer][name], t)
    again = tmp_path / ("again" + suffix)
    save_hash_weights(again, loaded, meta)
    o = {"sink_size": 2, "window_size": 2, "heavy_size": 6, "hat_bits": BITS}
    queries, keys = make(1, 4, 2, 3, 30, seed=2)
    masks = [
        mg.compile(mg.load_graph("graphs/hashattention.yaml", overrides={**o, "hat_weights": str(p)})).mask(
            queries, keys, keys, layer_idx=1
        )
        for p in (path, again)
    ]
    assert torch.equal(masks[0], masks[1]) and masks[0].sum() > 0


def _safetensors(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


def _good_tensors():
    w = random_hash_weights(1, 4, 2, D, BITS, 6)
    return {f"layer0.{name}": t.contiguous() for name, t in w[0].items()}


META = {"kind": "hashattention", "hat_bits": str(BITS), "hidden": "6"}


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t, m: m.update(kind="double_sparsity"), "kind"),
        (lambda t, m: m.pop("hidden"), "hidden"),
        (lambda t, m: t.pop("layer0.key.b2"), "lacks key.b2"),
        (lambda t, m: t.update({"layer0.key.w2": torch.zeros(2, 6, 3)}), "layer0.key.w2 has shape"),
        (lambda t, m: t.update({"layer0.query.w1": torch.zeros(4, D)}), "layer0.query.w1 has shape"),
        (lambda t, m: t.update({"extra": torch.zeros(1)}), "unexpected tensor"),
        (lambda t, m: t.update({"layer0.key.b1": torch.zeros(2, 6, dtype=torch.int64)}), "dtype"),
    ],
)
def test_malformed_file_rejected(change, message, tmp_path):
    tensors, meta = _good_tensors(), dict(META)
    change(tensors, meta)
    path = tmp_path / "bad.safetensors"
    _safetensors(path, tensors, meta)
    with pytest.raises(mg.CalibrationError, match=message):
        load_hash_weights(path)


def test_unreadable_and_pickled_files_rejected(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a weights file")
    with pytest.raises(mg.CalibrationError, match="cannot read"):
        load_hash_weights(junk)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        __metadata__=np.array(json.dumps(META)),
        **{"layer0.query.w1": np.array([{"a": 1}], dtype=object)},
    )
    with pytest.raises(mg.CalibrationError, match="cannot read"):
        load_hash_weights(pickled)
    no_meta = tmp_path / "nometa.npz"
    np.savez(no_meta, x=np.zeros(2))
    with pytest.raises(mg.CalibrationError, match="__metadata__"):
        load_hash_weights(no_meta)


def test_mismatches_with_the_graph_rejected(weights_file):
    path, _ = weights_file(4, 2, layers=1)
    queries, keys = make(1, 4, 2, 1, 10)
    with pytest.raises(mg.CalibrationError, match="hat_bits=32"):
        ha_scores(queries, keys, path, bits=32)
    with pytest.raises(mg.CalibrationError, match="no weights for layer 3"):
        ha_scores(queries, keys, path, layer=3)
    with pytest.raises(mg.CalibrationError, match=r"\(Hkv, D\)"):
        ha_scores(*make(1, 4, 1, 1, 10), path)
    with pytest.raises(mg.CalibrationError, match=r"\(Hq, D\)"):
        ha_scores(*make(1, 6, 2, 1, 10), path)
