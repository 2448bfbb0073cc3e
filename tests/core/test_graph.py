"""The IR: YAML round trip, overrides, per-layer rules, tabular printout, generated source."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg


@pytest.mark.parametrize("name", sorted(mg.shipped_graphs()))
def test_every_shipped_graph_round_trips(name):
    g = mg.load_graph(name)
    text = g.to_yaml()
    again = mg.load_graph(text)
    assert again == g
    assert again.to_yaml() == text


def test_round_trip_keeps_layers_and_params():
    g = mg.load_graph(
        {
            "graph": "layered",
            "params": {"window_size": 4},
            "nodes": [{"name": "w", "op": "local", "params": {"size": "$window_size"}}],
            "output": "w",
            "layers": {"dense": [0, 1], "overrides": {5: {"window_size": 2}}},
        }
    )
    again = mg.load_graph(g.to_yaml())
    assert again == g and again.layers.dense == [0, 1] and again.layers.overrides == {5: {"window_size": 2}}


def test_overrides_change_the_params_block_only():
    g = mg.load_graph("streaming_llm")
    h = mg.load_graph("streaming_llm", overrides={"window_size": 3})
    assert g.params["window_size"] == 128 and h.params["window_size"] == 3
    assert h.nodes == g.nodes
    assert h.node_params("window") == {"size": 3}
    q, k = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 10, 4)
    assert int(mg.compile(h).mask(q, k, k).sum()) == 10  # sinks (128 ≥ K) cover every key
    h2 = mg.load_graph("streaming_llm", overrides={"window_size": 3, "sink_size": 1})
    assert int(mg.compile(h2).mask(q, k, k).sum()) == 4


def test_with_overrides_and_compile_overrides():
    g = mg.load_graph("oracle_topk")
    assert g.with_overrides({"heavy_size": 5}).params["heavy_size"] == 5
    attn = mg.compile("oracle_topk", overrides={"sink_size": 1, "window_size": 1, "heavy_size": 2})
    q, k = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 9, 4)
    assert int(attn.mask(q, k, k).sum()) == 4


def test_for_layer_dense_and_overrides():
    g = mg.load_graph(
        {
            "params": {"window_size": 4},
            "nodes": [{"name": "w", "op": "local", "params": {"size": "$window_size"}}],
            "output": "w",
            "layers": {"dense": [0], "overrides": {2: {"window_size": 1}}},
        }
    )
    assert g.for_layer(0) is None
    assert g.for_layer(1) is g
    assert g.for_layer(2).params["window_size"] == 1


def test_tabular_lists_nodes_in_execution_order():
    text = mg.load_graph("oracle_topk").tabular()
    lines = text.splitlines()
    assert lines[0].split() == ["node", "op", "family", "inputs", "params", "out"]
    order = [ln.split()[0] for ln in lines[2:8]]
    assert order.index("scores") < order.index("heavy") < order.index("attended")
    assert order.index("fixed") < order.index("heavy")
    assert "heavy     topk   selector    scores=scores, prior=fixed" in text
    assert "Mask *" in text and "params: sink_size=128, window_size=128, heavy_size=0.1" in text


def test_dot_and_mermaid_name_every_node_and_port_type():
    g = mg.load_graph("oracle_topk")
    dot, mmd = g.to_dot(), g.to_mermaid()
    for name in g.nodes:
        assert f'"{name}"' in dot and name in mmd
    assert 'label=" Scores"' in dot and "prior: Mask" in dot  # a port named after its type shows the type
    assert '"Scores"' in mmd and '"prior: Mask"' in mmd


def test_generated_source_reads_like_code():
    src = mg.compile(mg.load_graph("streaming_llm", overrides={"sink_size": 4})).source
    assert "sink = _op_sink(_env, size=4)" in src
    assert "attended = _op_union(_env, masks=[sink, window])" in src
    compile(src, "<gen>", "exec")


def test_graph_equality_ignores_source_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(mg.load_graph("dense").to_yaml())
    assert mg.load_graph(path) == mg.load_graph("dense")


def test_load_from_yaml_text_dict_and_path_agree(tmp_path):
    g = mg.load_graph("streaming_llm")
    path = tmp_path / "s.yaml"
    path.write_text(g.to_yaml())
    assert mg.load_graph(str(path)) == mg.load_graph(g.to_yaml()) == mg.load_graph(g.to_dict()) == g


def test_mapping_style_nodes_load():
    g = mg.load_graph({"nodes": {"a": {"op": "sink", "params": {"size": 2}}}, "output": "a"})
    assert list(g.nodes) == ["a"] and g.nodes["a"].params == {"size": 2}


@pytest.mark.parametrize("name", sorted(mg.shipped_graphs()))
def test_every_shipped_graph_draws(name):
    from maskgraph.draw import to_ascii

    g = mg.load_graph(name)
    dot, mmd, text, table = g.to_dot(), g.to_mermaid(), to_ascii(g), g.tabular()
    for node in g.nodes:
        assert f'"{node}"' in dot and f"  {node}[" in mmd and f"{node}: " in text and node in table
    assert dot.count("->") >= len(g.nodes)  # every node has an input or feeds the output
    assert f"==> attention over '{g.output}'" in text


def test_ascii_shows_layer_rules():
    from maskgraph.draw import to_ascii

    g = mg.load_graph(
        {
            "params": {"window_size": 4},
            "nodes": [{"name": "w", "op": "local", "params": {"size": "$window_size"}}],
            "output": "w",
            "layers": {"dense": [0, 1], "overrides": {3: {"window_size": 2}}},
        }
    )
    text = to_ascii(g)
    assert "dense layers (graph not applied): 0, 1" in text and "layer 3 overrides: window_size=2" in text
