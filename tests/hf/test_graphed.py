"""GraphedDecoder: greedy decoding whose steps can be recorded as one CUDA graph.

The CPU has no CUDA graphs; these tests run the same step function eagerly (record=False),
check the tokens against ``model.generate`` and that a step reads nothing on the host while
"recording" (the request tracker's recording check patched on), which is what recording requires.
"""

from __future__ import annotations

import pytest
import torch
from hostreads import NoHostReads

import maskgraph as mg
from maskgraph.errors import NotSupportedError
from maskgraph.hf import GraphedDecoder, requests, tiny_model

NARROW = {"sink_size": 2, "window_size": 4}
GRAPHS = {
    "streaming_llm": NARROW,
    "quest": {**NARROW, "heavy_size": 8, "page_size": 4},
    "oracle_topk": {**NARROW, "heavy_size": 5},
    "pqcache": {**NARROW, "heavy_size": 5, "pq_bits": 3},
}


def prompt(n: int = 21, batch: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (batch, n), generator=torch.Generator().manual_seed(1))


def reference(model, ids, n) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[:, ids.shape[1] :]


def test_plain_model_matches_generate():
    model = tiny_model("llama")
    ids = prompt(batch=2)
    got = GraphedDecoder(model, 40, record=False).generate(ids, 8)
    assert torch.equal(got, reference(model, ids, 8))


# PQCache fits its codebooks at the first decode step in both (the prompt is dense)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_sparse_injection_matches_generate_and_reads_the_static_buffer(name):
    """Same tokens as ``generate`` on a dynamic cache; every decode call read the whole static
    buffer with its token count on the device."""
    model = tiny_model("qwen2")
    ids = prompt()
    with mg.inject(model, name, mode="sparse", overrides=GRAPHS[name]) as handle:
        want = reference(model, ids, 7)
        before = handle.calls
        got = GraphedDecoder(model, 33, record=False).generate(ids, 7)
        assert handle.static_calls == handle.calls - before == 6 * 2  # 6 steps, 2 layers
    assert torch.equal(got, want)


SHARES = {"sink_size": 0.1, "window_size": 0.2, "heavy_size": 0.25}


@pytest.mark.parametrize("name", ["oracle_topk", "quest", "pqcache"])
def test_shares_of_the_tokens_read_the_static_buffer(name):
    """Float budgets (the shipped graphs' kind) also take the static buffer: each step keeps
    the share of the tokens so far, and the tokens are generate's on a dynamic cache."""
    model = tiny_model("llama")
    ids = prompt()
    overrides = {**SHARES, **{"quest": {"page_size": 4}, "pqcache": {"pq_bits": 3}}.get(name, {})}
    with mg.inject(model, name, mode="sparse", overrides=overrides) as handle:
        want = reference(model, ids, 7)
        before = handle.calls
        got = GraphedDecoder(model, 33, record=False).generate(ids, 7)
        assert handle.static_calls == handle.calls - before == 6 * 2
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["streaming_llm", "quest", "pqcache"])
def test_a_step_reads_nothing_on_the_host_while_recording(name, monkeypatch):
    model = tiny_model("llama")
    with mg.inject(model, name, mode="sparse", overrides=GRAPHS[name]):
        decoder = GraphedDecoder(model, 40, record=False)
        decoder.generate(prompt(), 3)  # the first steps compile and build the caches
        monkeypatch.setattr(requests, "recording", lambda: True)
        with NoHostReads():
            decoder.step()


def test_recording_refuses_a_graph_that_needs_the_token_count_on_the_host(monkeypatch):
    model = tiny_model("llama")
    with mg.inject(model, "streaming_llm", overrides=NARROW):  # simulate mode: trims on the host
        decoder = GraphedDecoder(model, 40, record=False)
        decoder.generate(prompt(), 2)
        monkeypatch.setattr(requests, "recording", lambda: True)
        with pytest.raises(NotSupportedError, match=r"layer 0: recording a CUDA graph.*mode='sparse'"):
            decoder.step()


def test_bad_settings_are_refused():
    model = tiny_model("llama")
    with pytest.raises(NotSupportedError, match="record=True needs a CUDA model"):
        GraphedDecoder(model, 40, record=True)
    for warmup in (0, 1):
        with pytest.raises(NotSupportedError, match="warmup must be ≥ 2"):
            GraphedDecoder(model, 40, record=False, warmup=warmup)
    with pytest.raises(NotSupportedError, match="max_new_tokens must be ≥ 1"):
        GraphedDecoder(model, 30, record=False).generate(prompt(), 0)
    with pytest.raises(NotSupportedError, match="exceed max_cache_len=30"):
        GraphedDecoder(model, 30, record=False).generate(prompt(21), 10)
    with pytest.raises(NotSupportedError, match="sliding-window layers"):
        GraphedDecoder(tiny_model("gemma3"), 40, record=False).generate(prompt(), 2)
