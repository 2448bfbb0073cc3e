"""Write the malformed-graph corpus: tests/data/bad_graphs/*.yaml and expected.yaml.

Each case is (file name, text, expected error class, a substring of the message, what it is).
Add a case with ``add(...)`` and rerun ``python tests/data/bad_graphs/make_corpus.py``; the output
is deterministic (the binary junk uses a fixed seed).
"""

import os
import random

import yaml

D = os.path.dirname(os.path.abspath(__file__))
os.makedirs(D, exist_ok=True)
for f in os.listdir(D):
    if f.endswith(".yaml"):
        os.remove(os.path.join(D, f))

BASE = """\
graph: {name}
params:
  sink_size: 4
  window_size: 8
nodes:
  - name: sink
    op: sink
    params: {{size: $sink_size}}
  - name: window
    op: local
    params: {{size: $window_size}}
  - name: both
    op: union
    inputs: {{masks: [sink, window]}}
output: both
"""
cases = {}


def base(name, old=None, new=None, extra=""):
    t = BASE.format(name=name)
    if old is not None:
        assert old in t, (name, old)
        t = t.replace(old, new, 1)
    return t + extra


def add(name, text, error, match, doc):
    cases[name] = (text, error, match, doc)


TOPK = """\
graph: {name}
nodes:
  - {{name: scores, op: exact}}
  - {{name: window, op: local, params: {{size: 4}}}}
  - name: heavy
    op: topk
    inputs: {{scores: scores, prior: window}}
    params: {{k: 8}}
  - {{name: both, op: union, inputs: {{masks: [window, heavy]}}}}
output: both
"""


def topk(name, old, new):
    t = TOPK.format(name=name)
    assert old in t, (name, old)
    return t.replace(old, new, 1)


# cycles
add(
    "cycle_three",
    """\
nodes:
  - {name: a, op: union, inputs: {masks: [c]}}
  - {name: b, op: union, inputs: {masks: [a]}}
  - {name: c, op: union, inputs: {masks: [b]}}
output: c
""",
    "CycleError",
    "cycle",
    "a -> b -> c -> a",
)
add(
    "cycle_two",
    """\
nodes:
  - {name: s, op: sink, params: {size: 2}}
  - {name: a, op: union, inputs: {masks: [s, b]}}
  - {name: b, op: intersection, inputs: {a: a, b: s}}
output: b
""",
    "CycleError",
    "cycle",
    "two nodes reading each other",
)
add(
    "cycle_self",
    "nodes:\n  - {name: a, op: union, inputs: {masks: [a]}}\noutput: a\n",
    "CycleError",
    "a -> a",
    "a node reading itself",
)
add(
    "cycle_via_prior",
    topk("g", "prior: window", "prior: both"),
    "CycleError",
    "cycle",
    "top-k prior fed by its own union",
)
# unknown operators
add(
    "unknown_op_typo",
    base("g", "op: local", "op: locall"),
    "UnknownOperatorError",
    "did you mean 'local'",
    "misspelled operator",
)
add("unknown_op_case", topk("g", "op: topk", "op: TopK"), "UnknownOperatorError", "'TopK'", "wrong case")
add(
    "unknown_op_made_up",
    base("g", "op: union", "op: quantum_attention"),
    "UnknownOperatorError",
    "known:",
    "no such operator",
)
add("op_is_number", base("g", "op: sink", "op: 7"), "GraphError", "no 'op'", "operator given as a number")
add("op_missing", base("g", "    op: local\n", ""), "GraphError", "no 'op'", "node without op")
# parameters
add(
    "param_misspelled",
    base("g", "{size: $window_size}", "{sise: $window_size}"),
    "ParameterError",
    "did you mean 'size'",
    "misspelled parameter",
)
add(
    "param_misspelled_topk",
    topk("g", "{k: 8}", "{top_k: 8}"),
    "ParameterError",
    "parameter 'top_k'",
    "upstream-style name on the node",
)
add(
    "param_unknown_on_union",
    base("g", "inputs: {masks: [sink, window]}", "inputs: {masks: [sink, window]}\n    params: {weight: 2}"),
    "ParameterError",
    "valid: none",
    "parameter on an operator with none",
)
add(
    "param_string_size",
    base("g", "sink_size: 4", "sink_size: four"),
    "ParameterError",
    "wrong type",
    "word instead of number",
)
add(
    "param_quoted_number",
    base("g", "sink_size: 4", "sink_size: '4'"),
    "ParameterError",
    "wrong type",
    "quoted number",
)
add(
    "param_bool_size",
    base("g", "sink_size: 4", "sink_size: true"),
    "ParameterError",
    "wrong type",
    "boolean size",
)
add(
    "param_list_value",
    base("g", "{size: $window_size}", "{size: [1, 2]}"),
    "ParameterError",
    "plain numbers",
    "list value",
)
add(
    "param_map_value",
    base("g", "{size: $window_size}", "{size: {tokens: 3}}"),
    "ParameterError",
    "plain numbers",
    "mapping value",
)
add(
    "param_null_size",
    base("g", "sink_size: 4", "sink_size: null"),
    "ParameterError",
    "wrong type",
    "null size",
)
add("param_zero_size", base("g", "sink_size: 4", "sink_size: 0"), "ParameterError", "out of range", "size 0")
add(
    "param_negative_size",
    base("g", "window_size: 8", "window_size: -16"),
    "ParameterError",
    "out of range",
    "negative window",
)
add(
    "param_share_above_one",
    base("g", "window_size: 8", "window_size: 1.5"),
    "ParameterError",
    "out of range",
    "share > 1",
)
add("param_share_zero", topk("g", "{k: 8}", "{k: 0.0}"), "ParameterError", "out of range", "share 0.0")
add("param_nan", base("g", "sink_size: 4", "sink_size: .nan"), "ParameterError", "finite", "NaN")
add("param_inf", base("g", "sink_size: 4", "sink_size: .inf"), "ParameterError", "finite", "infinity")
add(
    "param_huge_int",
    base("g", "sink_size: 4", "sink_size: 1000000000000000000000000000000"),
    "ParameterError",
    "out of range",
    "10^30 tokens",
)
add(
    "param_huge_float",
    base("g", "window_size: 8", "window_size: 1.0e+308"),
    "ParameterError",
    "out of range",
    "1e308",
)
add(
    "param_overflow_float",
    base("g", "window_size: 8", "window_size: 1.0e+999"),
    "ParameterError",
    "finite",
    "overflows to inf",
)
add(
    "param_huge_negative",
    base("g", "window_size: 8", "window_size: -99999999999999999999999"),
    "ParameterError",
    "out of range",
    "huge negative",
)
add(
    "param_exponent_as_text",
    topk("g", "{k: 8}", "{k: 5e-2}"),
    "ParameterError",
    "write 5.0e-2",
    "YAML 1.1 reads 5e-2 as text",
)
add(
    "topp_p_zero",
    """\
nodes:
  - {name: s, op: exact}
  - {name: t, op: topp, inputs: {scores: s}, params: {p: 0}}
output: t
""",
    "ParameterError",
    "parameter 'p'",
    "p = 0",
)
add(
    "topp_p_above_one",
    """\
nodes:
  - {name: s, op: exact}
  - {name: t, op: topp, inputs: {scores: s}, params: {p: 1.01}}
output: t
""",
    "ParameterError",
    "out of range",
    "p > 1",
)
add(
    "topp_p_string",
    """\
nodes:
  - {name: s, op: exact}
  - {name: t, op: topp, inputs: {scores: s}, params: {p: ninety}}
output: t
""",
    "ParameterError",
    "wrong type",
    "p as text",
)
add(
    "ref_unknown",
    base("g", "{size: $window_size}", "{size: $window}"),
    "ParameterError",
    "did you mean '$window_size'",
    "reference to an undefined graph parameter",
)
add(
    "ref_no_params_block",
    "nodes:\n  - {name: s, op: sink, params: {size: $sink_size}}\noutput: s\n",
    "ParameterError",
    "defined: none",
    "reference with no params: block",
)
add(
    "params_block_list",
    base("g", "params:\n  sink_size: 4\n  window_size: 8\n", "params: [4, 8]\n"),
    "GraphError",
    "'params' must be a mapping",
    "params as a list",
)
add(
    "params_value_list",
    base("g", "window_size: 8", "window_size: [8, 16]"),
    "ParameterError",
    "plain numbers",
    "graph parameter holding a list",
)
add(
    "params_name_dash",
    base("g", "window_size: 8", "window_size: 8\n  window-size: 8"),
    "ParameterError",
    "identifiers",
    "graph parameter name with a dash",
)
add(
    "node_params_not_mapping",
    base("g", "{size: $sink_size}", "[4]"),
    "GraphError",
    "'params' must be a mapping",
    "node params as a list",
)
add(
    "node_param_key_number",
    base("g", "{size: $sink_size}", "{1: 4}"),
    "ParameterError",
    "parameter '1'",
    "numeric parameter name",
)
# wiring
add(
    "wire_unknown_node",
    base("g", "[sink, window]", "[sink, windw]"),
    "WiringError",
    "did you mean 'window'",
    "misspelled source",
)
add(
    "wire_unknown_port",
    base("g", "{masks: [sink, window]}", "{mask: [sink, window]}"),
    "WiringError",
    "did you mean 'masks'",
    "misspelled port",
)
add(
    "wire_scores_into_mask",
    """\
nodes:
  - {name: s, op: exact}
  - {name: w, op: local, params: {size: 2}}
  - {name: u, op: union, inputs: {masks: [w, s]}}
output: u
""",
    "WiringError",
    "port expects Mask but 's' gives Scores",
    "Scores into a Mask port",
)
add(
    "wire_mask_into_scores",
    topk("g", "scores: scores,", "scores: window,"),
    "WiringError",
    "expects Scores",
    "Mask into a Scores port",
)
add(
    "wire_keys_into_mask",
    base("g", "[sink, window]", "[sink, keys]"),
    "WiringError",
    "'keys' gives Keys",
    "graph input of the wrong type",
)
add(
    "wire_list_into_single",
    topk("g", "scores: scores,", "scores: [scores, scores],"),
    "WiringError",
    "one source",
    "list into a single port",
)
add(
    "wire_empty_variadic",
    base("g", "[sink, window]", "[]"),
    "WiringError",
    "at least one",
    "empty variadic port",
)
add(
    "wire_missing_scores",
    topk("g", "inputs: {scores: scores, prior: window}", "inputs: {prior: window}"),
    "WiringError",
    "missing input",
    "top-k without scores",
)
VATTENTION = """\
graph: g
nodes:
  - {name: window, op: local, params: {size: 4}}
  - name: window_partial
    op: partial
    inputs: {mask: window}
  - name: sampled
    op: vattention_sample
    inputs: {prior: window, partial: window_partial}
    params: {init_offset: 4, local_offset: 0}
  - {name: both, op: union, inputs: {masks: [window, sampled]}}
output: both
"""


def vattention(old, new):
    assert old in VATTENTION, old
    return VATTENTION.replace(old, new, 1)


add(
    "wire_vattention_prior_without_partial",
    vattention("inputs: {prior: window, partial: window_partial}", "inputs: {prior: window}"),
    "WiringError",
    "needs the prior's Partial",
    "vAttention sampler with a prior but no partial",
)
add(
    "param_offset_share_above_one",
    vattention("local_offset: 0", "local_offset: 1.5"),
    "ParameterError",
    "out of range",
    "vAttention local_offset float above 1 (a share of K)",
)
add(
    "wire_number_source",
    base("g", "[sink, window]", "3"),
    "GraphError",
    "must name a source",
    "number as a source",
)
add(
    "wire_inputs_list",
    base("g", "inputs: {masks: [sink, window]}", "inputs: [sink, window]"),
    "GraphError",
    "'inputs' must be a mapping",
    "inputs as a list",
)
# nodes and names
add(
    "duplicate_node_name",
    base("g", "  - name: window\n", "  - name: sink\n"),
    "GraphError",
    "duplicate node name",
    "two nodes named sink",
)
add(
    "duplicate_yaml_key",
    base("g", "window_size: 8", "window_size: 8\n  sink_size: 16"),
    "YAMLSyntaxError",
    "duplicate key",
    "a key given twice",
)
add(
    "duplicate_node_key",
    base("g", "    op: local\n", "    op: local\n    op: sink\n"),
    "YAMLSyntaxError",
    "duplicate key 'op'",
    "op given twice",
)
add(
    "node_not_mapping",
    base("g", "  - name: sink\n    op: sink\n    params: {size: $sink_size}\n", "  - sink\n"),
    "GraphError",
    "must be a mapping",
    "node as a bare string",
)
add(
    "node_without_name",
    base("g", "  - name: window\n    op: local", "  - op: local"),
    "GraphError",
    "no 'name'",
    "node without a name",
)
add(
    "node_name_number",
    base("g", "  - name: window\n", "  - name: 12\n"),
    "GraphError",
    "no 'name'",
    "numeric node name",
)
add(
    "node_name_dash",
    base("g", "name: window", "name: my-window").replace("[sink, window]", "[sink, my-window]"),
    "GraphError",
    "identifiers",
    "node name with a dash",
)
add(
    "node_name_keyword",
    base("g", "name: window", "name: lambda").replace("[sink, window]", "[sink, lambda]"),
    "GraphError",
    "identifiers",
    "Python keyword as a node name",
)
add(
    "node_name_reserved",
    base("g", "name: window", "name: queries").replace("[sink, window]", "[sink, queries]"),
    "GraphError",
    "reserved",
    "graph input name as a node name",
)
add(
    "node_unknown_key",
    base("g", "    inputs: {masks", "    input: {masks"),
    "GraphError",
    "did you mean 'inputs'",
    "misspelled node key",
)
add("nodes_missing", "graph: g\noutput: a\n", "GraphError", "no 'nodes'", "no nodes key")
add("nodes_empty", "graph: g\nnodes: []\noutput: a\n", "GraphError", "no nodes", "empty node list")
add(
    "nodes_scalar",
    "graph: g\nnodes: 5\noutput: a\n",
    "GraphError",
    "'nodes' must be a list",
    "nodes as a number",
)
add(
    "nodes_mapping_name_mismatch",
    "nodes:\n  a: {name: b, op: full}\noutput: a\n",
    "GraphError",
    "differs from its key",
    "mapping-style node with a different name",
)
# output
add("output_missing", base("g", "output: both\n", ""), "GraphError", "no 'output'", "no output")
add(
    "output_unknown",
    base("g", "output: both", "output: bothh"),
    "OutputError",
    "did you mean 'both'",
    "output names no node",
)
add(
    "output_scores",
    "nodes:\n  - {name: s, op: exact}\noutput: s\n",
    "OutputError",
    "must be a Mask",
    "output is Scores",
)
add(
    "output_list",
    base("g", "output: both", "output: [sink, window]"),
    "GraphError",
    "'output' must name a node",
    "two outputs",
)
add(
    "output_graph_input",
    base("g", "output: both", "output: keys"),
    "OutputError",
    "is not a node",
    "graph input as the output",
)
# top level
add(
    "top_unknown_key",
    base("g", "output: both", "outputs: both"),
    "GraphError",
    "did you mean 'output'",
    "misspelled top-level key",
)
add(
    "top_list",
    "- name: a\n  op: full\n",
    "YAMLSyntaxError",
    "must be a mapping",
    "a list instead of a mapping",
)
add("top_scalar", "full attention please\n", "YAMLSyntaxError", "must be a mapping", "a sentence")
add("top_number", "3.14\n", "YAMLSyntaxError", "must be a mapping", "a number")
add(
    "graph_name_list", base("g", "graph: g", "graph: [a, b]"), "GraphError", "'graph'", "graph name as a list"
)
add(
    "doc_not_string",
    base("g", "graph: g", "graph: g\ndoc: {a: 1}"),
    "GraphError",
    "'doc' must be a string",
    "doc as a mapping",
)
add("key_is_mapping", "? {a: 1}\n: 2\nnodes: []\n", "YAMLSyntaxError", "plain value", "complex mapping key")
# layers
add(
    "layers_not_mapping",
    base("g", extra="layers: 5\n"),
    "GraphError",
    "'layers' must be a mapping",
    "layers as a number",
)
add(
    "layers_unknown_key",
    base("g", extra="layers: {sparse: [1]}\n"),
    "GraphError",
    "unknown key 'sparse'",
    "misspelled layers key",
)
add(
    "layers_dense_negative",
    base("g", extra="layers: {dense: [0, -1]}\n"),
    "GraphError",
    "layer indices",
    "negative layer index",
)
add(
    "layers_override_unknown",
    base("g", extra="layers:\n  overrides:\n    2: {heavy_size: 0.2}\n"),
    "OverrideError",
    "'heavy_size'",
    "per-layer override of an undefined parameter",
)
add(
    "layers_override_index_word",
    base("g", extra="layers:\n  overrides:\n    first: {sink_size: 2}\n"),
    "GraphError",
    "not an integer",
    "layer index as a word",
)
add(
    "layers_override_bad_value",
    base("g", extra="layers:\n  overrides:\n    1: {sink_size: 0}\n"),
    "ParameterError",
    "out of range",
    "per-layer override out of range",
)
# YAML-level
add("empty", "", "YAMLSyntaxError", "empty", "empty file")
add("whitespace_only", "   \n\n\t\n", "YAMLSyntaxError", "", "only whitespace")
add("comments_only", "# nothing here\n# at all\n", "YAMLSyntaxError", "empty", "only comments")
add(
    "python_tag_apply",
    base("g", "graph: g", "graph: !!python/object/apply:os.system ['echo pwned']"),
    "YAMLSyntaxError",
    "tag",
    "code execution attempt",
)
add(
    "python_tag_name",
    base("g", "sink_size: 4", "sink_size: !!python/name:os.getcwd"),
    "YAMLSyntaxError",
    "python",
    "python/name tag",
)
add(
    "python_tag_tuple",
    base("g", "window_size: 8", "window_size: !!python/tuple [1, 2]"),
    "YAMLSyntaxError",
    "tag",
    "python/tuple tag",
)
add("custom_tag", base("g", "op: local", "op: !Op local"), "YAMLSyntaxError", "!Op", "custom local tag")
add("set_tag", base("g", "params:\n", "params: !!set\n"), "YAMLSyntaxError", "tag", "!!set tag")
add(
    "binary_tag",
    base("g", "sink_size: 4", "sink_size: !!binary aGVsbG8="),
    "ParameterError",
    "plain numbers",
    "!!binary value",
)
add(
    "invalid_yaml_bracket",
    base("g", "[sink, window]", "[sink, window"),
    "YAMLSyntaxError",
    "invalid YAML",
    "unclosed bracket",
)
add(
    "invalid_yaml_indent",
    base("g", "    op: local\n", "      op: local\n"),
    "YAMLSyntaxError",
    "invalid YAML",
    "bad indentation",
)
add(
    "invalid_yaml_tab",
    base("g", "    op: local", "\top: local"),
    "YAMLSyntaxError",
    "invalid YAML",
    "tab indentation",
)
add("two_documents", base("g") + "---\ngraph: h\n", "YAMLSyntaxError", "invalid YAML", "two YAML documents")
add(
    "deep_nesting",
    "graph: g\ndoc: " + "[" * 200 + "]" * 200 + "\nnodes: []\noutput: a\n",
    "YAMLSyntaxError",
    "too deep",
    "200 nested lists",
)
laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n"
for i in range(1, 9):
    prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
    laughs += f"{cur}: &{cur} [" + ", ".join(f"*{prev}" for _ in range(9)) + "]\n"
laughs += "nodes: []\noutput: a\n"
add("billion_laughs", laughs, "YAMLSyntaxError", "too large", "alias bomb (9^9 elements)")
# values YAML cannot build, values no operator can run, text that must not reach a terminal raw
add(
    "value_bad_date",
    base("g", "sink_size: 4", "sink_size: 2024-13-01"),
    "YAMLSyntaxError",
    "cannot read '2024-13-01' as a YAML timestamp",
    "a date with month 13",
)
add(
    "value_int_5000_digits",
    base("g", "sink_size: 4", "sink_size: " + "1" * 5000),
    "YAMLSyntaxError",
    "as a YAML int",
    "an integer past Python's digit limit",
)
add(
    "layers_override_index_inf",
    base("g", extra="layers:\n  overrides:\n    .inf: {sink_size: 2}\n"),
    "GraphError",
    "not an integer",
    "layer index .inf",
)
add(
    "alias_inside_its_anchor",
    base("g", "graph: g", "graph: g\ndoc: &a [1, *a]"),
    "YAMLSyntaxError",
    "names no anchor finished before it",
    "an alias inside the value it names",
)
add(
    "param_key_terminal_escape",
    base("g", "{size: $window_size}", '{"\\e[2J\\e[31m": 4}'),
    "ParameterError",
    "parameter '\\x1b[2J\\x1b[31m'",
    "a parameter name that clears the screen",
)
add(
    "param_value_5000_chars",
    base("g", "sink_size: 4", "sink_size: " + "x" * 5000),
    "ParameterError",
    "xxx...",
    "a 5000-character value, clipped in the message",
)
add(
    "output_5000_chars",
    base("g", "output: both", "output: " + "y" * 5000),
    "OutputError",
    "yyy...",
    "a 5000-character output name, clipped in the message",
)
add(
    "wire_unknown_among_300_nodes",
    "nodes:\n"
    + "".join(f"  - {{name: n{i}, op: local, params: {{size: 4}}}}\n" for i in range(300))
    + "  - {name: u, op: union, inputs: {masks: [n0, nowhere]}}\noutput: u\n",
    "WiringError",
    "(289 more)",
    "unknown source in a 300-node graph: the node list is clipped",
)
PQ = """\
nodes:
  - name: scores
    op: pq
    params: {pq_bits: 4, kmeans_iter: 4, seed: 0}
  - {name: heavy, op: topk, inputs: {scores: scores}, params: {k: 8}}
output: heavy
"""
add(
    "pq_seed_past_64_bits",
    PQ.replace("seed: 0", "seed: 1180591620717411303424"),
    "ParameterError",
    "out of range",
    "seed 2**70, which torch's generator cannot take",
)
add(
    "pq_kmeans_iter_1e12",
    PQ.replace("kmeans_iter: 4", "kmeans_iter: 1000000000000"),
    "ParameterError",
    "each iteration compares every key with every centroid",
    "10**12 Lloyd iterations (a hang)",
)
SOCKET = """\
nodes:
  - name: scores
    op: socket
    params: {tables: 32, bits: 8}
  - {name: heavy, op: topk, inputs: {scores: scores}, params: {k: 8}}
output: heavy
"""
add(
    "socket_tables_1e8",
    SOCKET.replace("tables: 32", "tables: 100000000"),
    "ParameterError",
    "int64 code per key and head",
    "10**8 hash tables (terabytes)",
)
add(
    "socket_buckets_2e22",
    SOCKET.replace("tables: 32, bits: 8", "tables: 64, bits: 16"),
    "ParameterError",
    "soft buckets per query and head, more than 262144",
    "64 tables of 2**16 buckets: 4M probabilities per query and head",
)
MAGICPIG = """\
nodes:
  - {name: window, op: local, params: {size: 4}}
  - name: sampled
    op: magicpig
    inputs: {prior: window}
    params: {lsh_l: 75, lsh_k: 8}
  - {name: both, op: union, inputs: {masks: [window, sampled]}}
output: both
"""
add(
    "magicpig_planes_63488",
    MAGICPIG.replace("lsh_l: 75, lsh_k: 8", "lsh_l: 1024, lsh_k: 62"),
    "ParameterError",
    "hyperplanes per head, more than 16384",
    "1024 tables of 62 planes",
)
add(
    "magicpig_tables_4096",
    MAGICPIG.replace("lsh_l: 75", "lsh_l: 4096").replace("lsh_k: 8", "lsh_k: 1"),
    "ParameterError",
    "out of range",
    "4096 tables: an int64 code per table, key and head",
)
add(
    "random_sample_seed_2_64",
    "nodes:\n  - {name: s, op: random_sample, params: {seed: 18446744073709551616}}\noutput: s\n",
    "ParameterError",
    "out of range",
    "seed 2**64",
)
add(
    "quest_page_size_1e6",
    """\
nodes:
  - {name: scores, op: quest, params: {page_size: 1000000}}
  - {name: heavy, op: topk_pages, inputs: {scores: scores}, params: {k: 64, page_size: 16}}
output: heavy
""",
    "ParameterError",
    "padded to page_size keys",
    "pages of a million keys",
)
add("binary_junk", None, "YAMLSyntaxError", "binary", "random bytes with NULs")
add("latin1_bytes", None, "YAMLSyntaxError", "UTF-8", "not UTF-8")

expected = {}
for name, (text, error, match, doc) in cases.items():
    path = os.path.join(D, name + ".yaml")
    if name == "binary_junk":
        rnd = random.Random(0)
        data = bytes(rnd.randrange(256) for _ in range(512)) + b"\x00\x01"
        open(path, "wb").write(data)
    elif name == "latin1_bytes":
        open(path, "wb").write(BASE.format(name="g").replace("graph: g", "graph: caf\xe9").encode("latin-1"))
    else:
        open(path, "w").write(text)
    expected[name + ".yaml"] = {"error": error, "match": match, "what": doc}
with open(os.path.join(D, "expected.yaml"), "w") as f:
    f.write(
        "# Malformed graphs and what loading each must raise: error class and a substring of the message.\n"
    )
    yaml.safe_dump(expected, f, sort_keys=True, width=120)
print(len(expected))
