"""The command line: help texts, validate, show (text, pictures, masks), ops and its Markdown page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import maskgraph as mg
from maskgraph.cli.main import SUBCOMMANDS, build_parser, main
from maskgraph.cli.ops import operators_markdown

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad_graphs"
HAS_DOT = shutil.which("dot") is not None


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_no_command_prints_help(capsys):
    rc, out, _ = run_cli(capsys)
    assert rc == 2 and "COMMAND" in out and "validate" in out


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: maskgraph {name}")
    assert "--debug" in out


@pytest.mark.parametrize("name", ["validate", "show", "ops"])
def test_help_teaches_with_text_and_examples(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    assert len(out) > 600, "help should explain, not just list flags"
    assert "examples:" in out


def test_parser_builds_without_duplicate_options():
    build_parser()


# ----- validate ---------------------------------------------------------------------------------
def test_validate_good_graphs(capsys):
    files = [str(p) for p in mg.shipped_graphs().values()]
    rc, out, err = run_cli(capsys, "validate", *files)
    assert rc == 0, err
    assert out.count("ok: ") == len(files)


def test_validate_mixed_files_reports_each(capsys):
    rc, out, err = run_cli(
        capsys, "validate", "dense", str(BAD / "unknown_op_typo.yaml"), str(BAD / "cycle_self.yaml")
    )
    assert rc == 1
    assert "ok: dense" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "did you mean 'local'" in lines[0] and "unknown_op_typo.yaml:10" in lines[0]


def test_validate_prints_warnings_but_passes(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text("nodes:\n  - {name: a, op: full}\n  - {name: b, op: causal}\noutput: a\n")
    rc, out, err = run_cli(capsys, "validate", str(path))
    assert rc == 0 and "ok:" in out
    assert "warning:" in err and "node 'b' feeds nothing" in err


def test_validate_quiet(capsys):
    rc, out, _ = run_cli(capsys, "validate", "-q", "dense")
    assert rc == 0 and out == ""


def test_validate_with_overrides(capsys):
    rc, _, _ = run_cli(capsys, "validate", "streaming_llm", "-p", "window_size=16")
    assert rc == 0
    rc, _, err = run_cli(capsys, "validate", "streaming_llm", "-p", "window_size=0")
    assert rc == 1 and "out of range" in err
    rc, _, err = run_cli(capsys, "validate", "streaming_llm", "-p", "windowsize=3")
    assert rc == 1 and "did you mean 'window_size'" in err
    rc, _, err = run_cli(capsys, "validate", "streaming_llm", "-p", "window_size")
    assert rc == 1 and "name=value" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where):
    argv = ["validate", str(BAD / "cycle_self.yaml")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(mg.CycleError):
        main(argv)


def test_user_errors_in_other_commands_are_one_line(capsys):
    rc, _, err = run_cli(capsys, "show", "graphs/nope.yaml")
    assert rc == 1 and err.startswith("maskgraph show: error: ") and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(capsys, "ops", "topkk")
    assert rc == 1 and "did you mean 'topk'" in err


# ----- show -------------------------------------------------------------------------------------
def test_show_ascii_default(capsys):
    rc, out, _ = run_cli(capsys, "show", "oracle_topk")
    assert rc == 0
    assert "heavy: topk" in out and "selector" in out and "k=0.1 ($heavy_size)" in out
    assert "==> attention over 'attended'" in out


def test_show_table_and_source(capsys):
    rc, out, _ = run_cli(capsys, "show", "streaming_llm", "--table", "--source", "-p", "sink_size=8")
    assert rc == 0
    assert "node" in out and "combinator" in out and "params: sink_size=8" in out
    assert "def graph_mask(_env, _prep):" in out and "size=8" in out


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_show_text_drawings(tmp_path, capsys, suffix):
    out = tmp_path / f"g{suffix}"
    rc, stdout, _ = run_cli(capsys, "show", "oracle_topk", "-o", str(out))
    assert rc == 0 and out.exists() and "wrote" in stdout
    text = out.read_text()
    assert ("digraph" in text) if suffix == ".dot" else text.startswith("flowchart TB")
    assert "prior: Mask" in text and "Scores" in text


def test_dot_colours_families_and_marks_inputs_and_output():
    from maskgraph.draw import FAMILY_COLOURS

    dot = mg.load_graph("oracle_topk").to_dot()
    for fam in ("fixed", "estimator", "selector", "combinator"):
        assert FAMILY_COLOURS[fam] in dot
    assert 'style="filled,dashed"' in dot  # graph inputs
    assert "doubleoctagon" in dot  # the attention output
    assert "<B>heavy</B>" in dot and "$heavy_size" in dot


def test_dot_escapes_html_in_labels():
    from maskgraph.draw import _html

    assert _html('<a & "b">') == "&lt;a &amp; &quot;b&quot;&gt;"
    dot = mg.load_graph("oracle_topp").to_dot()
    assert "tooltip=" in dot and "<B>" in dot  # labels are HTML, tooltips escaped text


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' not installed")
@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_show_pictures(tmp_path, capsys, suffix):
    out = tmp_path / f"g{suffix}"
    rc, _, err = run_cli(capsys, "show", "vattention", "-o", str(out))
    assert rc == 0, err
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data


def test_show_picture_without_graphviz_says_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rc, _, err = run_cli(capsys, "show", "dense", "-o", str(tmp_path / "g.svg"))
    assert rc == 1 and "apt-get install graphviz" in err


def test_show_unknown_suffix(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "show", "dense", "-o", str(tmp_path / "g.jpeg"))
    assert rc == 1 and "'.jpeg'" in err


@pytest.mark.slow
def test_show_mask_on_a_tiny_model(tmp_path, capsys):
    out = tmp_path / "m.png"
    rc, stdout, err = run_cli(
        capsys,
        "show",
        "oracle_topk",
        "--mask",
        "--model",
        "tiny-llama",
        "--prompt",
        "hello sparse attention world!",
        "-p",
        "sink_size=2",
        "-p",
        "window_size=4",
        "-p",
        "heavy_size=3",
        "--layer",
        "1",
        "--head",
        "3",
        "-o",
        str(out),
    )
    assert rc == 0, err
    assert out.read_bytes().startswith(b"\x89PNG")
    assert stdout.startswith("oracle_topk on tiny-llama") and "\r" not in err  # no progress bar left
    for name in ("sink", "window", "fixed", "heavy", "attended"):
        assert f"  {name} " in stdout
    art = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(art) == 24  # 29 byte tokens pooled to 24 rows
    assert "layer 1, head 3, 29 tokens" in stdout


def test_show_mask_node_masks_match_the_graph():
    """Each drawn node mask is that node computed by the graph itself (a subgraph of it)."""
    import torch

    from maskgraph.cli import show_mask as sm

    g = mg.load_graph("oracle_topk", overrides={"sink_size": 1, "window_size": 2, "heavy_size": 2})
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 4, 9, 8, generator=gen),
        torch.randn(1, 2, 9, 8, generator=gen),
        torch.randn(1, 2, 9, 8, generator=gen),
    )
    cap = sm.Captured(q, k, v, 8**-0.5, ["t"] * 9)
    masks = sm.node_masks(g, cap)
    assert list(masks) == ["sink", "window", "fixed", "heavy", "attended"]
    causal = torch.zeros(9, 9).masked_fill(torch.ones(9, 9).triu(1).bool(), float("-inf")).view(1, 1, 9, 9)
    torch.testing.assert_close(masks["attended"], mg.compile(g).mask(q, k, v, causal)[0])
    # Query i keeps sink {0} and window {i-1, i}; from query 4 on, at least 2 other keys are eligible.
    assert (masks["heavy"].sum(-1)[:, 4:] == 2).all() and (masks["heavy"].sum(-1)[:, 3] == 1).all()


@pytest.mark.slow
def test_show_mask_bad_layer_and_head(capsys):
    rc, _, err = run_cli(capsys, "show", "dense", "--mask", "--model", "tiny-llama", "--layer", "7")
    assert rc == 1 and "layers 0..1" in err
    rc, _, err = run_cli(capsys, "show", "dense", "--mask", "--model", "tiny-llama", "--head", "9")
    assert rc == 1 and "query heads 0..3" in err


def test_terminal_rendering_marks_kept_cells():
    import torch

    from maskgraph.cli.show_mask import terminal

    m = torch.eye(4)
    assert terminal(m).splitlines() == ["|@   |", "| @  |", "|  @ |", "|   @|"]
    assert terminal(torch.zeros(2, 3)).splitlines() == ["|   |", "|   |"]


# ----- ops --------------------------------------------------------------------------------------
def test_ops_lists_every_operator(capsys):
    rc, out, _ = run_cli(capsys, "ops")
    assert rc == 0
    for name, spec in mg.all_ops().items():
        if not name.endswith("_test"):
            assert f"{name}(" in out and f"[{spec.family}]" in out


def test_ops_selected_and_family(capsys):
    rc, out, _ = run_cli(capsys, "ops", "topk")
    assert rc == 0 and out.startswith("topk(scores: Scores, prior: Mask?) -> Mask") and "default 0.1" in out
    rc, out, _ = run_cli(capsys, "ops", "--family", "fixed")
    assert "sink(" in out and "topk(" not in out


def test_operators_markdown_is_in_sync():
    page = ROOT / "docs" / "operators.md"
    assert page.read_text() == operators_markdown(), (
        "docs/operators.md is stale: run `maskgraph ops --markdown > docs/operators.md`"
    )


def test_cli_reference_documents_every_subcommand():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name in SUBCOMMANDS:
        assert f"## `maskgraph {name}`" in text, f"docs/cli.md has no section for {name}"


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' not installed")
def test_awkward_names_and_values_still_draw(tmp_path, capsys):
    path = tmp_path / "odd.yaml"
    path.write_text(
        "graph: 'my \"odd\" <graph> & co'\n"
        "nodes:\n  - {name: s, op: sink, params: {size: 2}}\n"
        "  - {name: v, op: vattention_sample, params: {bound: denominator}}\n"
        "  - {name: u, op: union, inputs: {masks: [s, v]}}\noutput: u\n"
    )
    for suffix in (".svg", ".mmd"):
        rc, _, err = run_cli(capsys, "show", str(path), "-o", str(tmp_path / f"odd{suffix}"))
        assert rc == 0, err
    assert (tmp_path / "odd.svg").read_text().count("<svg") == 1


def test_layer_rules_appear_in_every_drawing():
    """Dense layers and per-layer overrides show in the DOT (so SVG/PNG) and Mermaid drawings as
    in the ASCII one; a graph without rules draws no note."""
    text = (
        "graph: g\nparams: {k: 4}\nnodes:\n  - name: s\n    op: sink\n    params: {size: $k}\n"
        "output: s\nlayers:\n  dense: [0, 1]\n  overrides:\n    3: {k: 8}\n"
    )
    g = mg.load_graph(text)
    rules = ("dense layers (graph not applied): 0, 1", "layer 3 overrides: k=8")
    from maskgraph.draw import to_ascii

    for drawing in (g.to_dot(), g.to_mermaid(), to_ascii(g)):
        assert all(rule in drawing for rule in rules), drawing
    plain = mg.load_graph("dense")
    assert "__layers__" not in plain.to_dot() and ":::note" not in plain.to_mermaid()
