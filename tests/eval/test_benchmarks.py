"""The standard benchmarks as eval tasks: reading local copies (JSONL, JSON, Parquet,
save_to_disk), filling the templates, the truncation rules, the missing-data errors, and one
run of ``maskgraph eval`` on the fixtures with a tiny random model.

The fixtures in tests/data/benchmarks/ are written for these tests in each benchmark's schema.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import pytest

from maskgraph.cli.main import main
from maskgraph.errors import MaskgraphError
from maskgraph.eval.bench import (
    BENCHMARKS,
    BenchmarkDataError,
    bench_task_names,
    check_data,
    load_items,
    sample,
)
from maskgraph.eval.bench.prompt import middle_truncate
from maskgraph.eval.tasks import Template

DATA = Path(__file__).parents[1] / "data" / "benchmarks"
CHAT = Template(prefix="<user>", suffix="</user><assistant>")
NONE = Template(prefix="", suffix="")


class CharTokenizer:
    """One token per character: decoding gives the text back, so cuts can be checked exactly."""

    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


TOK = CharTokenizer()


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----- reading each format ----------------------------------------------------------------------
def test_jsonl_rows_become_items_with_answers_and_classes():
    path, items = load_items("longbench:trec", str(DATA / "longbench"))
    assert path == DATA / "longbench" / "trec.jsonl"
    (row,) = rows(path)
    assert items[0].answers == ("City",)
    assert items[0].classes == tuple(row["all_classes"])
    _, qasper = load_items("longbench:qasper", str(DATA / "longbench"))
    assert [i.answers for i in qasper] == [
        tuple(r["answers"]) for r in rows(DATA / "longbench" / "qasper.jsonl")
    ]


def test_json_list_file_and_subtasks_selected_by_domain():
    data = str(DATA / "longbench_v2")
    path, every = load_items("longbench_v2:all", data)
    assert path.name == "data.json" and len(every) == 3
    assert len(load_items("longbench_v2:single_doc_qa", data)[1]) == 2
    assert len(load_items("longbench_v2:code_repo", data)[1]) == 1


def test_parquet_file():
    path, items = load_items("infinitebench:longbook_choice_eng", str(DATA / "infinitebench"))
    assert path.suffix == ".parquet"
    # the answer text and its option letter
    assert [i.answers for i in items] == [("blue", "B"), ("forty", "D")]


def test_save_to_disk_folders_dataset_dict_and_dataset():
    # a DatasetDict folder given as --data itself: its validation split is read
    path, items = load_items("zeroscrolls:qasper", str(DATA / "zeroscrolls" / "qasper"))
    assert path == DATA / "zeroscrolls" / "qasper" and len(items) == 2
    # the benchmark folder: <task>/validation, a saved Dataset, is found under it
    path2, items2 = load_items("zeroscrolls:qasper", str(DATA / "zeroscrolls"))
    assert path2 == DATA / "zeroscrolls" / "qasper" / "validation" and items2 == items
    assert [i.answers for i in items] == [("blue",), ("the lighthouse keeper",)]


def test_a_hub_layout_folder_reads_the_benchmark_split(tmp_path):
    import datasets

    folder = tmp_path / "passkey"
    folder.mkdir()
    row = rows(DATA / "infinitebench" / "passkey.jsonl")[0]
    datasets.Dataset.from_list([row]).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    datasets.Dataset.from_list([{**row, "answer": ["1"]}] * 3).to_parquet(
        str(folder / "train-00000-of-00001.parquet")
    )
    path, items = load_items("infinitebench:passkey", str(tmp_path))
    assert path == folder and [i.answers for i in items] == [("71432",)]


def test_loogle_expands_every_question_of_a_document():
    _, qa = load_items("loogle:shortdep_qa", str(DATA / "loogle"))
    assert [i.answers for i in qa] == [("forty ships",), ("the port office",)]
    _, cloze = load_items("loogle:shortdep_cloze", str(DATA / "loogle"))
    assert json.loads(cloze[0].answers[0]) == {"<mask-0>": "Ada Lowe", "<mask-1>": "Port Office"}
    _, summary = load_items("loogle:longdep_summarization", str(DATA / "loogle"))
    assert len(summary) == 1 and summary[0].answers[0].startswith("A keeper counts ships")


# ----- templates --------------------------------------------------------------------------------
def test_longbench_template_fills_and_splits_at_the_document():
    (row, _) = rows(DATA / "longbench" / "qasper.jsonl")
    template = BENCHMARKS["longbench"].subtasks["qasper"].template
    s = sample("longbench:qasper", str(DATA / "longbench"), TOK, 10_000, 0, NONE)
    assert s.context + s.question == template.format(context=row["context"], input=row["input"])
    assert s.context.endswith(row["context"])
    assert s.question.startswith("\n\n Answer the question based on the above article")
    assert s.question.endswith(f"Question: {row['input']}\n\nAnswer:")
    assert (s.metric, s.max_new_tokens, s.kind) == ("qa_f1", 128, "benchmark")
    assert s.n_tokens == len(s.context + s.question)


def test_chat_wrapping_except_where_the_benchmark_keeps_the_prompt_plain():
    qasper = sample("longbench:qasper", str(DATA / "longbench"), TOK, 10_000, 0, CHAT)
    assert qasper.context.startswith("<user>You are given a scientific article")
    assert qasper.question.endswith("Answer:</user><assistant>")
    trec = sample("longbench:trec", str(DATA / "longbench"), TOK, 10_000, 0, CHAT)
    assert (
        trec.context.startswith("Please determine the type") and "<user>" not in trec.context + trec.question
    )


def test_ruler_question_is_the_last_line_and_the_answer_prefix_follows_the_wrapping():
    (row, _) = rows(DATA / "ruler" / "niah_single_1" / "validation.jsonl")
    s = sample("ruler:niah_single_1", str(DATA / "ruler"), TOK, 10_000, 0, CHAT)
    assert s.question == (
        "What are all the special magic numbers for quiet-river mentioned in the provided text?"
        "</user><assistant>" + row["answer_prefix"]
    )
    assert s.context == "<user>" + row["input"][: row["input"].rfind("\n") + 1]
    assert (s.answers, s.metric, s.max_new_tokens) == (("4711",), "string_match_all", 128)
    assert sample("ruler:qa_1", str(DATA / "ruler"), TOK, 10_000, 0, CHAT).metric == "string_match_part"


def test_infinitebench_chat_and_base_model_templates():
    data = str(DATA / "infinitebench")
    chat = sample("infinitebench:longbook_choice_eng", data, TOK, 10_000, 0, NONE)
    assert chat.question.endswith("Don't say anything else.\nA. red\nB. blue\nC. green\nD. black")
    base = sample("infinitebench:longbook_choice_eng", data, TOK, 10_000, 0, NONE, plain=True)
    assert base.question.endswith("D. black\n\nThe letter of the correct answer is")
    run = sample("infinitebench:code_run", data, TOK, 10_000, 0, NONE)
    assert "There is a function called named func_2." in run.context
    assert "return value of func_2(-4). Be concise." in run.question


def test_longbench_v2_template_strips_its_fields():
    s = sample("longbench_v2:all", str(DATA / "longbench_v2"), TOK, 10_000, 0, NONE)
    assert s.context.startswith(
        "Please read the following text and answer the question below.\n\n<text>\nThe "
    )
    assert (
        "What is the correct answer to this question: Which color is the notebook? (0)\nChoices:\n"
        in s.question
    )
    assert "(B) blue\n" in s.question and s.answers == ("B",)


# ----- truncation -------------------------------------------------------------------------------
def test_middle_truncation_keeps_the_first_and_last_halves():
    ids = list(range(100))
    assert middle_truncate(ids, 40) == (list(range(20)), list(range(80, 100)))
    assert middle_truncate(ids, 41) == (list(range(20)), list(range(80, 100)))  # budget // 2 each side
    assert middle_truncate(ids, 100) == (ids, [])
    with pytest.raises(MaskgraphError, match="too small"):
        middle_truncate(ids, 1)


def test_middle_truncated_prompt_holds_exactly_the_budget():
    (row, _) = rows(DATA / "longbench" / "qasper.jsonl")
    full = (
        BENCHMARKS["longbench"].subtasks["qasper"].template.format(context=row["context"], input=row["input"])
    )
    budget = 1000
    assert len(full) > budget
    s = sample("longbench:qasper", str(DATA / "longbench"), TOK, budget, 0, NONE)
    text = s.context + s.question
    assert s.n_tokens == len(text) == budget
    assert text == full[: budget // 2] + full[-budget // 2 :]
    # the question part survived whole, so it still goes through the graph as the query
    assert (
        s.question
        == f"\n\n Answer the question based on the above article{full.split('above article', 1)[1]}"
    )
    # with chat wrapping, the budget leaves room for it: the whole prompt still holds `budget`
    wrapped = sample("longbench:qasper", str(DATA / "longbench"), TOK, budget, 0, CHAT)
    assert wrapped.n_tokens == budget


def test_a_query_longer_than_half_the_budget_leaves_the_kept_last_half_as_the_query():
    (row, _) = rows(DATA / "longbench" / "qasper.jsonl")
    full = (
        BENCHMARKS["longbench"].subtasks["qasper"].template.format(context=row["context"], input=row["input"])
    )
    budget = 200  # the query part alone is longer than 100 characters
    s = sample("longbench:qasper", str(DATA / "longbench"), TOK, budget, 0, NONE)
    assert s.context == full[:100] and s.question == full[-100:]


def test_zeroscrolls_truncation_cuts_the_document_end_and_inserts_the_separator():
    data = str(DATA / "zeroscrolls" / "qasper")
    full = sample("zeroscrolls:qasper", data, TOK, 10_000, 0, NONE)
    budget = 600
    s = sample("zeroscrolls:qasper", data, TOK, budget, 0, NONE)
    separator = "... [The rest of the article is omitted]\n\n"
    assert s.question == full.question == "\n\nQuestion:\nWhat color is the notebook?\n\nAnswer:"
    assert s.context.endswith(separator)
    kept = s.context[: -len(separator)]
    assert full.context.startswith(kept)
    assert len(kept) + len(separator + s.question) == budget


def test_ruler_refuses_a_prompt_longer_than_the_length():
    with pytest.raises(BenchmarkDataError, match="RULER prepares each length separately"):
        sample("ruler:niah_single_1", str(DATA / "ruler"), TOK, 300, 0, NONE)


# ----- errors -----------------------------------------------------------------------------------
def test_without_data_the_error_says_which_files_and_where_to_get_them():
    with pytest.raises(BenchmarkDataError) as e:
        check_data(["longbench:qasper"], None, 1)
    text = str(e.value)
    assert "qasper.jsonl" in text and "THUDM/LongBench" in text and "no --data was given" in text


def test_a_path_without_the_files_is_named(tmp_path):
    with pytest.raises(BenchmarkDataError) as e:
        check_data(["ruler:vt"], str(tmp_path), 1)
    text = str(e.value)
    assert str(tmp_path) in text and "vt/validation.jsonl" in text and "NVIDIA/RULER" in text


def test_a_file_in_another_schema_is_refused_with_its_columns(tmp_path):
    (tmp_path / "qasper.jsonl").write_text(json.dumps({"question": "q", "text": "t"}) + "\n")
    with pytest.raises(
        BenchmarkDataError, match=r"qasper.jsonl is not in the expected schema: no column\(s\) context"
    ):
        check_data(["longbench:qasper"], str(tmp_path), 1)


def test_too_few_rows_and_unknown_names_are_refused():
    with pytest.raises(BenchmarkDataError, match="holds 1 samples; --samples 5"):
        check_data(["longbench:trec"], str(DATA / "longbench"), 5)
    with pytest.raises(MaskgraphError, match="unknown LongBench sub-task 'qaspr'.*qasper"):
        check_data(["longbench:qaspr"], str(DATA / "longbench"), 1)
    with pytest.raises(MaskgraphError, match="unknown benchmark 'longbnch'.*longbench_v2"):
        check_data(["longbnch:qasper"], str(DATA / "longbench"), 1)


def test_zeroscrolls_test_split_without_answers_is_refused(tmp_path):
    row = {"id": "x", "input": "Doc.\n\nQuestion: q\n\nAnswer:", "output": None, "query_start_index": 4,
           "truncation_seperator": "..."}  # fmt: skip
    (tmp_path / "qasper.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(BenchmarkDataError, match="validation split"):
        check_data(["zeroscrolls:qasper"], str(tmp_path), 1)


def test_help_lists_every_benchmark(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--data" in out
    for name, bench in BENCHMARKS.items():
        assert f"  {name}: {', '.join(bench.subtasks)}" in out
    assert "longbench:qasper" in bench_task_names()


# ----- end to end -------------------------------------------------------------------------------
class WordTokenizer:
    """One token per whitespace-separated word, hashed into the tiny models' 256 ids."""

    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [zlib.crc32(w.encode()) % 256 for w in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{int(i)}" for i in ids)


def test_maskgraph_eval_runs_a_benchmark_task_into_a_run_folder(tmp_path, monkeypatch, capsys):
    from maskgraph.cli import eval as eval_cli
    from maskgraph.hf import models
    from maskgraph.hf.models import tiny_model

    monkeypatch.setattr(eval_cli, "check_model_name", lambda name: None)
    monkeypatch.setattr(
        models, "load_model", lambda name, device: (tiny_model("llama", seed=0), WordTokenizer())
    )
    config_of = models.model_config
    monkeypatch.setattr(
        models, "model_config", lambda name: config_of("tiny-llama" if name == "tiny" else name)
    )
    out = tmp_path / "run"
    args = ["eval", "--model", "tiny", "--graph", "dense", "streaming_llm", "--densities", "0.2",
            "--task", "infinitebench:passkey", "--data", str(DATA / "infinitebench"), "--lengths", "300",
            "--samples", "2", "--template", "plain", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == str(DATA / "infinitebench") and config["tasks"] == ["infinitebench:passkey"]
    metrics = json.loads((out / "metrics.json").read_text())["cells"]
    assert set(metrics) == {
        "dense@default/infinitebench:passkey/300",
        "streaming_llm@20%/infinitebench:passkey/300",
    }
    for cell in metrics.values():
        assert cell["status"] == "ok" and cell["samples"] == 2 and cell["kind"] == "benchmark"
        assert 0 <= cell["score"] <= 100
    dense = metrics["dense@default/infinitebench:passkey/300"]
    assert dense["agreement"] == 1.0 and dense["score"] == dense["ref_score"]
    lines = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert {tuple(r["answers"]) for r in lines} == {("71432",), ("20931",)}
    assert all(r["n_tokens"] <= 300 for r in lines)

    # a resume must read the same files
    copy = tmp_path / "copy"
    shutil.copytree(DATA / "infinitebench", copy)
    at = args.index("--data") + 1
    capsys.readouterr()
    assert main([*args[:at], str(copy), *args[at + 1 :]]) != 0
    assert f"data {str(DATA / 'infinitebench')!r} in the run" in capsys.readouterr().err

    md = tmp_path / "results.md"
    assert main(["report", str(out), "--out", str(md)]) == 0
    assert "### Standard benchmarks (each sub-task's own metric, 0–100)" in md.read_text()
    assert "infinitebench:passkey @300" in md.read_text()


def test_a_run_folder_from_before_data_existed_resumes_and_a_malformed_data_is_refused(tmp_path):
    from maskgraph.errors import RunFolderError
    from maskgraph.eval.runner import EvalConfig, run_eval
    from maskgraph.hf.models import tiny_model

    text = tmp_path / "book.txt"
    text.write_text("In the beginning was a long sentence about nothing much at all. " * 40)
    config = EvalConfig(model="tiny", graphs=["dense"], tasks=["ppl"], lengths=[64], samples=1,
                        template="plain", text_file=str(text))  # fmt: skip
    out = tmp_path / "run"
    first = run_eval(
        config, out, model=tiny_model("llama", seed=0), tokenizer=WordTokenizer(), progress=False
    )
    stored = json.loads((out / "config.json").read_text())
    assert stored["data"] is None
    del stored["data"]
    (out / "config.json").write_text(json.dumps(stored))
    assert run_eval(config, out, progress=False) == first  # nothing to run, nothing refused
    (out / "config.json").write_text(json.dumps({**stored, "data": 5}))
    with pytest.raises(RunFolderError, match="'data' must be a string or null"):
        run_eval(config, out, progress=False)


@pytest.mark.parametrize(
    "path", [DATA / "longbench" / "qasper.jsonl", DATA / "infinitebench" / "longbook_choice_eng.parquet"]
)
def test_reading_leaves_no_cache_behind(path, tmp_path, monkeypatch):
    import datasets

    from maskgraph.eval.bench.data import read_rows

    # datasets fixes its cache folder at import; point it (and the temporary folders) at tmp
    default_cache, temp = tmp_path / "hf-cache", tmp_path / "tmp"
    default_cache.mkdir()
    temp.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", default_cache)
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    assert read_rows(path, ("test",))
    assert list(default_cache.iterdir()) == [] and list(temp.iterdir()) == []


def test_reading_sets_no_environment_variable(monkeypatch):
    import os

    from maskgraph.eval.bench.data import read_rows

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    read_rows(DATA / "longbench" / "qasper.jsonl", ("test",))
    assert "HF_DATASETS_OFFLINE" not in os.environ
