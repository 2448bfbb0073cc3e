"""Every validation error, one test each: the right class, and a message naming the culprit."""

from __future__ import annotations

import textwrap
import warnings

import pytest

import maskgraph as mg

GOOD = """\
graph: g
params:
  sink_size: 4
  window_size: 8
nodes:
  - name: sink
    op: sink
    params: {size: $sink_size}
  - name: window
    op: local
    params: {size: $window_size}
  - name: both
    op: union
    inputs: {masks: [sink, window]}
output: both
"""


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(tmp_path, text, cls):
    path = write(tmp_path, text)
    with pytest.raises(cls) as info:
        mg.load_graph(path)
    assert type(info.value) is cls, f"expected {cls.__name__}, got {type(info.value).__name__}"
    msg = str(info.value)
    assert msg.startswith(path), f"message does not start with the file: {msg}"
    return info.value, msg


def test_good_graph_loads(tmp_path):
    g = mg.load_graph(write(tmp_path, GOOD))
    assert list(g.nodes) == ["sink", "window", "both"]


def test_unknown_operator_suggests(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("op: local", "op: locl"), mg.UnknownOperatorError)
    assert "node 'window'" in msg and "'locl'" in msg and "did you mean 'local'" in msg
    assert exc.line == 10 and f"{exc.file}:10:" in msg
    assert "known:" in msg


def test_unknown_parameter_suggests(tmp_path):
    exc, msg = error_of(
        tmp_path, GOOD.replace("{size: $window_size}", "{sise: $window_size}"), mg.ParameterError
    )
    assert "node 'window'" in msg and "parameter 'sise'" in msg and "did you mean 'size'" in msg
    assert "valid: size" in msg and exc.line == 11


def test_missing_required_parameter(tmp_path):
    from maskgraph.registry import Param, Port, operator
    from maskgraph.types import PortType

    if "needs_n_test" not in mg.all_ops():

        @operator(
            "needs_n_test",
            family="utility",
            output=PortType.MASK,
            inputs=[Port("keys", PortType.KEYS)],
            params=[Param("n", "int", doc="required")],
        )
        def needs_n_test(env, *, n):
            raise AssertionError("never run")

    try:
        text = "nodes:\n  - name: a\n    op: needs_n_test\noutput: a\n"
        exc, msg = error_of(tmp_path, text, mg.ParameterError)
        assert "node 'a'" in msg and "parameter 'n'" in msg and "missing required" in msg
        assert "an integer" in msg and exc.line == 2
    finally:
        from maskgraph.registry import REGISTRY

        REGISTRY.pop("needs_n_test", None)


def test_ill_typed_parameter(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("sink_size: 4", "sink_size: four"), mg.ParameterError)
    assert "node 'sink'" in msg and "parameter 'size'" in msg and "wrong type" in msg
    assert "'four'" in msg and "int >= 1" in msg and "$sink_size" in msg
    assert exc.line == 3  # points at the params: block entry the value comes from


def test_out_of_range_parameter(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("{size: $window_size}", "{size: 1.5}"), mg.ParameterError)
    assert "node 'window'" in msg and "out of range" in msg and "1.5" in msg and "(0, 1]" in msg
    assert exc.line == 11


def test_out_of_range_negative_size(tmp_path):
    _, msg = error_of(tmp_path, GOOD.replace("window_size: 8", "window_size: -3"), mg.ParameterError)
    assert "out of range" in msg and "-3" in msg


def test_topp_p_range(tmp_path):
    text = """\
    nodes:
      - {name: s, op: exact}
      - {name: t, op: topp, inputs: {scores: s}, params: {p: 0}}
    output: t
    """
    _, msg = error_of(tmp_path, text, mg.ParameterError)
    assert "node 't'" in msg and "parameter 'p'" in msg and "(0, 1]" in msg


def test_unknown_input_node(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("[sink, window]", "[sink, windw]"), mg.WiringError)
    assert (
        "node 'both'" in msg and "port 'masks'" in msg and "'windw'" in msg and "did you mean 'window'" in msg
    )
    assert exc.line == 14


def test_unknown_port(tmp_path):
    _, msg = error_of(
        tmp_path, GOOD.replace("{masks: [sink, window]}", "{mask: [sink, window]}"), mg.WiringError
    )
    assert "port 'mask'" in msg and "did you mean 'masks'" in msg


def test_port_type_mismatch_scores_into_mask(tmp_path):
    text = """\
    nodes:
      - {name: s, op: exact}
      - {name: w, op: local, params: {size: 2}}
      - {name: u, op: union, inputs: {masks: [w, s]}}
    output: u
    """
    exc, msg = error_of(tmp_path, text, mg.WiringError)
    assert "node 'u'" in msg and "port 'masks'" in msg and "expects Mask" in msg and "'s' gives Scores" in msg
    assert exc.line == 4


def test_list_into_single_port(tmp_path):
    text = """\
    nodes:
      - {name: s, op: exact}
      - {name: t, op: topk, inputs: {scores: [s, s]}, params: {k: 2}}
    output: t
    """
    _, msg = error_of(tmp_path, text, mg.WiringError)
    assert "port 'scores'" in msg and "one source" in msg


def test_missing_input_port(tmp_path):
    text = "nodes:\n  - {name: t, op: topk, params: {k: 2}}\noutput: t\n"
    _, msg = error_of(tmp_path, text, mg.WiringError)
    assert "node 't'" in msg and "port 'scores'" in msg and "Scores" in msg and "missing input" in msg


def test_cycle_names_the_cycle(tmp_path):
    text = """\
    nodes:
      - {name: a, op: union, inputs: {masks: [c]}}
      - {name: b, op: union, inputs: {masks: [a]}}
      - {name: c, op: union, inputs: {masks: [b]}}
    output: c
    """
    _, msg = error_of(tmp_path, text, mg.CycleError)
    assert "cycle" in msg
    cycle = msg.split("cycle: ")[1].split(";")[0]
    assert set(cycle.split(" -> ")) == {"a", "b", "c"}


def test_self_loop(tmp_path):
    _, msg = error_of(
        tmp_path, "nodes:\n  - {name: a, op: union, inputs: {masks: [a]}}\noutput: a\n", mg.CycleError
    )
    assert "a -> a" in msg


def test_missing_output(tmp_path):
    _, msg = error_of(tmp_path, GOOD.replace("output: both\n", ""), mg.GraphError)
    assert "no 'output'" in msg


def test_output_not_a_node(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("output: both", "output: bth"), mg.OutputError)
    assert "'bth'" in msg and "did you mean 'both'" in msg and exc.line == 15


def test_output_not_a_mask(tmp_path):
    _, msg = error_of(tmp_path, "nodes:\n  - {name: s, op: exact}\noutput: s\n", mg.OutputError)
    assert "node 's'" in msg and "Scores" in msg and "must be a Mask" in msg


def test_node_feeding_nothing_warns(tmp_path):
    text = GOOD.replace("output: both", "  - {name: extra, op: causal}\noutput: both")
    with pytest.warns(mg.MaskgraphWarning, match="node 'extra' feeds nothing"):
        mg.load_graph(write(tmp_path, text))


def test_unused_graph_parameter_warns(tmp_path):
    text = GOOD.replace("window_size: 8", "window_size: 8\n  unused: 3")
    with pytest.warns(mg.MaskgraphWarning, match="'unused' is not used"):
        mg.load_graph(write(tmp_path, text))


def test_good_graph_has_no_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mg.load_graph(write(tmp_path, GOOD))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path, text):
    _, msg = error_of(tmp_path, text, mg.YAMLSyntaxError)
    assert "must be a mapping" in msg


def test_empty_file(tmp_path):
    _, msg = error_of(tmp_path, "", mg.YAMLSyntaxError)
    assert "empty" in msg


def test_python_tag_is_refused(tmp_path):
    exc, msg = error_of(
        tmp_path,
        GOOD.replace("graph: g", "graph: !!python/object/apply:os.system ['echo hi']"),
        mg.YAMLSyntaxError,
    )
    assert "tag" in msg and "python" in msg and exc.line == 1


def test_custom_tag_is_refused(tmp_path):
    _, msg = error_of(tmp_path, GOOD.replace("sink_size: 4", "sink_size: !mine 4"), mg.YAMLSyntaxError)
    assert "!mine" in msg


def test_invalid_yaml_has_line(tmp_path):
    exc, msg = error_of(tmp_path, GOOD.replace("op: union", "op: [union"), mg.YAMLSyntaxError)
    assert "invalid YAML" in msg and exc.line is not None


def test_duplicate_node_names(tmp_path):
    text = GOOD.replace("  - name: window\n", "  - name: sink\n")
    exc, msg = error_of(tmp_path, text, mg.GraphError)
    assert "node 'sink'" in msg and "duplicate node name" in msg and "line 6" in msg and exc.line == 9


def test_duplicate_yaml_keys(tmp_path):
    _, msg = error_of(
        tmp_path, GOOD.replace("window_size: 8", "window_size: 8\n  sink_size: 5"), mg.YAMLSyntaxError
    )
    assert "duplicate key 'sink_size'" in msg


def test_unknown_param_reference(tmp_path):
    exc, msg = error_of(
        tmp_path, GOOD.replace("{size: $window_size}", "{size: $windowsize}"), mg.ParameterError
    )
    assert "node 'window'" in msg and "'$windowsize'" in msg and "did you mean '$window_size'" in msg
    assert "defined: sink_size, window_size" in msg and exc.line == 11


def test_unknown_top_level_key(tmp_path):
    _, msg = error_of(tmp_path, GOOD.replace("output: both", "outptu: both"), mg.GraphError)
    assert "'outptu'" in msg and "did you mean 'output'" in msg


def test_unknown_node_key(tmp_path):
    _, msg = error_of(tmp_path, GOOD.replace("    inputs: {masks", "    input: {masks"), mg.GraphError)
    assert "node 'both'" in msg and "'input'" in msg and "did you mean 'inputs'" in msg


def test_reserved_node_name(tmp_path):
    _, msg = error_of(
        tmp_path, GOOD.replace("name: sink", "name: keys").replace("[sink,", "[keys,"), mg.GraphError
    )
    assert "node 'keys'" in msg and "reserved" in msg


def test_override_of_unknown_name(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(mg.OverrideError) as info:
        mg.load_graph(path, overrides={"window_sise": 3})
    msg = str(info.value)
    assert msg.startswith(path) and "'window_sise'" in msg and "did you mean 'window_size'" in msg
    assert "defines: sink_size, window_size" in msg


def test_override_with_bad_value_names_the_parameter(tmp_path):
    with pytest.raises(mg.ParameterError, match=r"node 'window', parameter 'size'.*\$window_size"):
        mg.load_graph(write(tmp_path, GOOD), overrides={"window_size": 0})


def test_layer_override_of_unknown_name(tmp_path):
    text = GOOD + "layers:\n  overrides:\n    3: {heavy: 2}\n"
    exc, msg = error_of(tmp_path, text, mg.OverrideError)
    assert "layer 3" in msg and "'heavy'" in msg and exc.line == 18


def test_errors_without_a_file_carry_a_line(tmp_path):
    with pytest.raises(mg.UnknownOperatorError, match=r"^line 3: node 'a'"):
        mg.load_graph("graph: x\nnodes:\n  - {name: a, op: nope}\noutput: a\n")


def test_dict_source_errors_name_the_node():
    with pytest.raises(mg.UnknownOperatorError, match="node 'a'"):
        mg.load_graph({"nodes": [{"name": "a", "op": "nope"}], "output": "a"})


def test_missing_file_lists_shipped_graphs(tmp_path):
    with pytest.raises(mg.GraphError, match="no such file.*streaming_llm"):
        mg.load_graph(str(tmp_path / "nope.yaml"))


def test_all_errors_derive_from_maskgraph_error():
    for cls in (
        mg.YAMLSyntaxError,
        mg.UnknownOperatorError,
        mg.ParameterError,
        mg.WiringError,
        mg.CycleError,
        mg.OutputError,
        mg.OverrideError,
    ):
        assert issubclass(cls, mg.GraphError) and issubclass(cls, mg.MaskgraphError)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(mg.GraphError, match="is a folder"):
        mg.load_graph(str(tmp_path) + "/")


def test_misspelled_shipped_graph_name_suggests():
    with pytest.raises(
        mg.GraphError,
        match=r"no such graph file or shipped graph 'streaming_lm'; did you mean 'streaming_llm'",
    ):
        mg.load_graph("streaming_lm")
