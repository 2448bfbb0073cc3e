"""Every validation error, one test each: the right class, and a message naming the culprit."""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch

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


# ----- adversarial input: values that validate must run, messages must stay readable -----------
def _attention_f64(q, k, v, keys_of) -> torch.Tensor:
    """Float64 softmax attention of query (b, h, i) over the key list ``keys_of(b, h, i)``, one
    row at a time; query head h reads KV head h // (Hq / Hkv)."""
    b, hq, nq, d = q.shape
    group = hq // k.shape[1]
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            for i in range(nq):
                keys = keys_of(bi, h, i)
                s = (k[bi, h // group, keys].double() @ q[bi, h, i].double()) * d**-0.5
                out[bi, h, i] = torch.softmax(s, 0) @ v[bi, h // group, keys].double()
    return out


def _qkv(b=2, hq=4, hkv=2, nq=3, nk=13, d=8, seed=None):
    gen = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**31, ())))
    q = torch.randn(b, hq, nq, d, generator=gen)
    k = torch.randn(b, hkv, nk, d, generator=gen)
    v = torch.randn(b, hkv, nk, d, generator=gen)
    return q, k, v


def _window_and_top(q, k, window: int, top: int):
    """keys_of for window ∪ top-k exact scores outside the window (what the graphs below build)."""
    nq, nk, group = q.shape[2], k.shape[2], q.shape[1] // k.shape[1]

    def keys_of(bi, h, i):
        t = nk - nq + i
        near = [j for j in range(nk) if t - window < j <= t]
        scores = k[bi, h // group].double() @ q[bi, h, i].double()
        rest = sorted((j for j in range(nk) if j not in near), key=lambda j: -float(scores[j]))
        return sorted(near + rest[:top])

    return keys_of


SINGLE_LIST_PORT = """\
graph: single
nodes:
  - {name: window, op: local, params: {size: 2}}
  - {name: scores, op: exact}
  - {name: heavy, op: topk, inputs: {scores: scores, prior: window}, params: {k: 3}}
  - {name: only_heavy, op: union, inputs: {masks: heavy}}
  - {name: both, op: union, inputs: {masks: [window, only_heavy]}}
output: both
"""


@pytest.mark.parametrize("mode", ["simulate", "sparse"])
def test_list_port_given_one_name_is_a_one_item_list(mode):
    """`masks: heavy` reads as `masks: [heavy]`: each batch row keeps its own top-k keys."""
    graph = mg.load_graph(SINGLE_LIST_PORT)
    assert graph.nodes["only_heavy"].inputs == {"masks": "heavy"}  # kept as written
    as_list = mg.load_graph(SINGLE_LIST_PORT.replace("masks: heavy}", "masks: [heavy]}"))
    q, k, v = _qkv()
    want = _attention_f64(q, k, v, _window_and_top(q, k, window=2, top=3))
    one, listed = mg.compile(graph, mode=mode), mg.compile(as_list, mode=mode)
    got = one(q, k, v)
    assert (got.double() - want).abs().max() < 1e-5
    assert torch.equal(got, listed(q, k, v))
    if mode == "simulate":
        assert torch.equal(one.mask(q, k, v), listed.mask(q, k, v))


HOSTILE_NAMES = ["op_local", "op_sink", "op_union", "op_topk", "op_exact", "graph_mask", "chunk_attention"]
HOSTILE_NAMES += ["Env", "attend", "torch", "mask", "out", "empty", "empty_rows", "q_offset", "print"]


def test_node_names_like_the_generated_code_cannot_collide():
    """Nodes named as the generated function's globals and locals (op_sink, graph_mask, torch,
    ...) compute what plainly named nodes compute."""
    window, scores, heavy, joined, *chain = HOSTILE_NAMES
    lines = [
        "graph: hostile",
        "nodes:",
        f"  - {{name: {window}, op: local, params: {{size: 2}}}}",
        f"  - {{name: {scores}, op: exact}}",
        f"  - {{name: {heavy}, op: topk, inputs: {{scores: {scores}, prior: {window}}}, params: {{k: 3}}}}",
        f"  - {{name: {joined}, op: union, inputs: {{masks: [{window}, {heavy}]}}}}",
    ]
    previous = joined
    for name in chain:  # each a union of the one before: the same mask again
        lines.append(f"  - {{name: {name}, op: union, inputs: {{masks: [{previous}]}}}}")
        previous = name
    lines.append(f"output: {previous}")
    graph = mg.load_graph("\n".join(lines) + "\n")
    q, k, v = _qkv()
    want = _attention_f64(q, k, v, _window_and_top(q, k, window=2, top=3))
    for mode in ("simulate", "sparse"):
        got = mg.compile(graph, mode=mode)(q, k, v)
        assert (got.double() - want).abs().max() < 1e-5, mode


def test_zero_heads_or_channels_are_a_shape_error():
    attn = mg.compile("streaming_llm")
    for hq, hkv, d in [(0, 0, 8), (2, 0, 8), (2, 1, 0)]:
        q, k = torch.randn(1, hq, 3, d), torch.randn(1, hkv, 5, d)
        with pytest.raises(mg.ShapeError, match="at least one head"):
            attn(q, k, k)


PQ_GRAPH = """\
nodes:
  - name: scores
    op: pq
    params: {pq_group_factor: 2, pq_bits: 2, kmeans_iter: 2, seed: SEED}
  - {name: heavy, op: topk, inputs: {scores: scores}, params: {k: 4}}
output: heavy
"""


def test_seeds_are_bounded_to_what_torch_generators_take():
    """A seed is an int in [-2**63, 2**64 - 1]: both ends run, one past either end is refused."""
    q, k, v = _qkv(b=1, hq=2, hkv=1, nq=2, nk=9)
    for seed in (-(2**63), 2**64 - 1):
        attn = mg.compile(PQ_GRAPH.replace("SEED", str(seed)))
        assert torch.isfinite(attn(q, k, v)).all()
    for seed in (-(2**63) - 1, 2**64, 2**70):
        with pytest.raises(mg.ParameterError, match=r"parameter 'seed': out of range"):
            mg.load_graph(PQ_GRAPH.replace("SEED", str(seed)))
    sampler = "nodes:\n  - {name: s, op: random_sample, params: {seed: SEED}}\noutput: s\n"
    with pytest.raises(mg.ParameterError, match=r"\[-2\*\*63, 2\*\*64 - 1\]"):
        mg.load_graph(sampler.replace("SEED", str(2**64)))


@pytest.mark.parametrize(
    "op, largest, bad, why",
    [
        ("pq", {"kmeans_iter": 1000}, {"kmeans_iter": 1001}, "compares every key with every centroid"),
        ("pq", {"pq_group_factor": 1024}, {"pq_group_factor": 1025}, "split the head dim"),
        ("socket", {"tables": 1024}, {"tables": 1025}, "int64 code per key and head"),
        ("socket", {"tables": 4, "bits": 16}, {"tables": 5, "bits": 16}, "more than 262144"),
        ("quest", {"page_size": 4096}, {"page_size": 4097}, "padded to page_size keys"),
        ("magicpig", {"lsh_l": 1024}, {"lsh_l": 1025}, "int64 code per key and head"),
        ("magicpig", {"lsh_l": 264, "lsh_k": 62}, {"lsh_l": 265, "lsh_k": 62}, "more than 16384"),
    ],
)
def test_sizes_and_loop_counts_are_bounded_with_the_reason(op, largest, bad, why):
    """Parameters that size tensors or count loop steps stop at what the operator can run: the
    largest allowed value validates, one more is refused naming the parameter and the reason."""

    def graph(p):
        text = ", ".join(f"{key}: {value}" for key, value in p.items())
        if op == "magicpig":
            return f"nodes:\n  - {{name: n, op: magicpig, params: {{{text}}}}}\noutput: n\n"
        return (
            f"nodes:\n  - {{name: n, op: {op}, params: {{{text}}}}}\n"
            "  - {name: t, op: topk, inputs: {scores: n}, params: {k: 4}}\noutput: t\n"
        )

    mg.load_graph(graph(largest))
    with pytest.raises(mg.ParameterError, match="node 'n', parameter") as info:
        mg.load_graph(graph(bad))
    assert why in str(info.value)


def test_socket_and_magicpig_products_are_bounded_where_they_still_run():
    """The largest products the bounds allow run on small inputs; one step more is refused."""
    q, k, v = _qkv(b=1, hq=2, hkv=1, nq=1, nk=6)
    socket = "nodes:\n  - {name: s, op: socket, params: {tables: 4, bits: 16}}\n"
    socket += "  - {name: t, op: topk, inputs: {scores: s}, params: {k: 2}}\noutput: t\n"
    assert torch.isfinite(mg.compile(socket)(q, k, v)).all()
    with pytest.raises(mg.ParameterError, match="parameter 'tables'"):
        mg.load_graph(socket.replace("tables: 4", "tables: 5"))
    magicpig = "nodes:\n  - {name: m, op: magicpig, params: {lsh_l: 264, lsh_k: 62, seed: 1}}\noutput: m\n"
    assert torch.isfinite(mg.compile(magicpig)(q, k, v)).all()
    with pytest.raises(mg.ParameterError, match="parameter 'lsh_l'"):
        mg.load_graph(magicpig.replace("lsh_l: 264", "lsh_l: 265"))


# ----- overrides: -p values are plain, bounded, and errors name the override ---------------------
def _cli(capsys, *argv):
    from maskgraph.cli.main import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _alias_bomb(levels: int, width: int) -> str:
    """A flow list whose anchors and aliases expand to width**levels items."""
    text = "&a0 [" + ", ".join(["x"] * width) + "]"
    for i in range(1, levels):
        text = f"[{text}, &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]]"
    return text


def test_override_aliases_are_refused_before_they_expand(capsys):
    from maskgraph.cli.common import parse_overrides

    bomb = _alias_bomb(levels=4, width=9)  # 9**4 items if expanded (the 314 characters gave 10**9)
    with pytest.raises(mg.OverrideError, match=r"^-p window_size=.*anchors and aliases"):
        parse_overrides([f"window_size={bomb}"])
    rc, out, err = _cli(capsys, "validate", "streaming_llm", "-p", f"window_size={bomb}")
    assert rc == 1 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "-p window_size=" in err and "aliases" in err
    assert len(err) < 300  # the value is clipped, not echoed whole


def test_override_values_are_length_limited_and_clipped(capsys):
    rc, _, err = _cli(capsys, "validate", "streaming_llm", "-p", "window_size=" + "9" * 5000)
    assert rc == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "longer than 1000 characters" in err and "-p window_size=999" in err and len(err) < 300
    rc, _, err = _cli(capsys, "validate", "streaming_llm", "-p", "window_size=" + "9" * 999)
    assert rc == 1 and "out of range" in err and len(err) < 500  # read (a number), then refused


@pytest.mark.parametrize("value, says", [("2024-01-01", "as a date"), ("2024-13-01", "cannot read")])
def test_date_like_override_names_the_option_not_the_yaml_line(capsys, value, says):
    rc, out, err = _cli(capsys, "validate", "streaming_llm", "-p", f"window_size={value}")
    assert rc == 1 and out == "" and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"maskgraph validate: error: -p window_size={value}: ") and says in line
    assert ".yaml:" not in line  # not located at the params: line the override replaces


def test_api_override_values_must_be_plain(tmp_path):
    import datetime

    path = write(tmp_path, GOOD)
    for value in (datetime.date(2024, 1, 1), [4], {"a": 1}, b"4"):
        with pytest.raises(mg.OverrideError, match="parameter 'window_size': an override value must be"):
            mg.load_graph(path, overrides={"window_size": value})


def test_bad_override_value_is_located_at_the_override(tmp_path):
    with pytest.raises(mg.ParameterError) as info:
        mg.load_graph(write(tmp_path, GOOD), overrides={"window_size": 0})
    assert info.value.line is None  # the params: line holds a good value
    assert "set by the override window_size=0" in str(info.value)
    text = GOOD + "layers:\n  overrides:\n    1: {window_size: -3}\n"
    exc, msg = error_of(tmp_path, text, mg.ParameterError)
    assert exc.line == 18 and "set by the overrides of layer 1" in msg


def test_rule_broken_by_a_layer_override_names_that_layer(tmp_path):
    """lsh_l · lsh_k is fine in the params: block and too large with layer 3's lsh_k: the error
    names layer 3 and its line, not the params: line of the other factor."""
    text = (
        "graph: g\nparams:\n  l: 1024\n  k: 8\nnodes:\n  - name: mp\n    op: magicpig\n"
        "    params: {lsh_l: $l, lsh_k: $k}\noutput: mp\nlayers:\n  overrides:\n    3: {k: 62}\n"
    )
    exc, msg = error_of(tmp_path, text, mg.ParameterError)
    assert exc.line == 12 and "with the overrides of layer 3: lsh_l · lsh_k" in msg


def test_layer_override_values_must_be_plain(tmp_path):
    text = GOOD + "layers:\n  overrides:\n    1: {window_size: [1, 2]}\n"
    exc, msg = error_of(tmp_path, text, mg.OverrideError)
    assert exc.line == 18 and "parameter 'window_size'" in msg and "a list" in msg


# ----- terminal escapes in user text are printed escaped ----------------------------------------
ESCAPES = "\x1b[2J\x1b[31m\x07"


def test_validate_show_and_table_print_escapes_escaped(tmp_path, capsys):
    text = GOOD.replace("graph: g", 'graph: "evil\\e[2J\\e[31m\\a"\ndoc: "title\\e]0;pwned\\a done"')
    text = text.replace("  window_size: 8", '  window_size: 8\n  note: "\\e[5m"')
    path = write(tmp_path, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mg.load_graph(path).name == "evil" + ESCAPES
    for argv in (["validate", path], ["show", path, "--ascii"], ["show", path, "--table"]):
        rc, out, err = _cli(capsys, *argv)
        assert rc == 0, err
        assert "'note' is not used" in err, argv  # every command prints the warning, one line
        assert all(c.isprintable() or c == "\n" for c in out + err), argv
        assert "\\x1b[" in out and "\\\\x1b" not in out + err, argv  # escaped exactly once
    rc, out, _ = _cli(capsys, "validate", path)
    assert "graph 'evil\\x1b[2J\\x1b[31m\\x07'" in out


def test_error_messages_escape_names_from_the_graph(tmp_path):
    text = GOOD.replace("{size: $sink_size}", '{size: $sink_size, "\\e[2J": 1}')
    _, msg = error_of(tmp_path, text, mg.ParameterError)
    assert "parameter '\\x1b[2J'" in msg and msg.isprintable()
    evil_file = tmp_path / "a\x1b[2Jb.yaml"
    evil_file.write_text(GOOD.replace("op: local", "op: nope"))
    with pytest.raises(mg.UnknownOperatorError) as info:
        mg.load_graph(evil_file)
    assert str(info.value).startswith(str(tmp_path) + "/a\\x1b[2Jb.yaml:10:")
