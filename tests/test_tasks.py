"""Task loaders against the real benchmark files in ../shared/data."""

from __future__ import annotations

import json

import polars as pl
import pytest

from mixdistill.errors import TaskError
from mixdistill.tasks import TASKS, CustomTask, get_task, load_problems, parse_gold_number
from mixdistill.tasks.custom import load as load_custom


@pytest.mark.parametrize(
    "task,split,n",
    [
        ("svamp", "full", 1000),
        ("svamp", "train", 800),
        ("svamp", "test", 200),
        ("gsm8k", "train", 7473),
        ("gsm8k", "test", 1319),
        ("asdiv", "all", 2084),
        ("asdiv", "asdiv-a", 1218),
        ("asdiv", "asdiv-a-fold4", 266),
        ("strategyqa", "train", 2061),
        ("strategyqa", "dev", 229),
    ],
)
def test_split_sizes(shared_data, task, split, n):
    problems = TASKS[task].load_split(shared_data, split)
    assert len(problems) == n
    assert len({p.problem_id for p in problems}) == n, "problem ids must be unique within a split"


def test_svamp_dss_split_matches_distilling_step_by_step_files(shared_data):
    """Our 800/200 split is the DSS one, row for row (their `input` is Body + newline + Question)."""
    for split in ("train", "test"):
        ours = TASKS["svamp"].load_split(shared_data, split)
        lines = (shared_data / f"distilling-step-by-step/datasets/svamp/svamp_{split}.json").read_text().splitlines()
        theirs = [json.loads(line) for line in lines if line.strip()]
        assert len(ours) == len(theirs)
        disagree = []
        for p, row in zip(ours, theirs):
            assert p.question == " ".join(s.strip() for s in row["input"].split("\n"))
            if abs(p.gold_number - eval(row["label"])) > 1e-6:  # their label is the SVAMP equation
                disagree.append(p.source_id)
        # gold is SVAMP's `Answer` field (what published scores use); in one problem it contradicts the equation
        # ("4 apples, picked 2, 3 grew": Answer 1.0, Equation (4-2)+3 = 5).
        assert disagree == (["chal-680"] if split == "train" else [])
    train = {p.problem_id for p in TASKS["svamp"].load_split(shared_data, "train")}
    test = {p.problem_id for p in TASKS["svamp"].load_split(shared_data, "test")}
    full = {p.problem_id for p in TASKS["svamp"].load_split(shared_data, "full")}
    assert not train & test and train | test == full


def test_gold_values_are_exact(shared_data):
    svamp = {p.source_id: p for p in TASKS["svamp"].load_split(shared_data, "full")}
    assert svamp["chal-1"].gold_number == 51.0 and svamp["chal-1"].answer_type == "number"
    gsm = TASKS["gsm8k"].load_split(shared_data, "test")
    assert gsm[0].gold_number == 18 and gsm[0].question.startswith("Janet")
    assert gsm[146].gold_number == 2125 and gsm[146].gold_text == "2125"  # "#### 2,125"
    assert gsm[611].gold_number == 1_450_000  # "#### 1,450,000"
    assert gsm[489].gold_number == -10
    asdiv = {p.source_id: p for p in TASKS["asdiv"].load_split(shared_data, "all")}
    assert asdiv["nluds-0001"].gold_number == 9 and asdiv["nluds-0001"].question.endswith("in the basket?")
    assert "nluds-0030" not in asdiv  # answer "Mrs. Hilt" is not a number
    sqa = TASKS["strategyqa"].load_split(shared_data, "dev")
    assert sqa[0].answer_type == "bool" and sqa[0].gold_bool is False and sqa[0].gold_text == "no"
    assert sum(p.gold_bool for p in sqa) + sum(not p.gold_bool for p in sqa) == 229


def test_problem_id_is_independent_of_split(shared_data):
    full = {p.source_id: p.problem_id for p in TASKS["svamp"].load_split(shared_data, "full")}
    for p in TASKS["svamp"].load_split(shared_data, "test"):
        assert full[p.source_id] == p.problem_id


@pytest.mark.parametrize(
    "text,value",
    [("1,234", 1234.0), ("-3.5", -3.5), ("42", 42.0), (" 7 ", 7.0), ("$18", 18.0), (".5", 0.5)],
)
def test_parse_gold_number(text, value):
    assert parse_gold_number(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12 apples", "1,23", "3:4", "1.2.3", "-", "2 ; 3"])
def test_parse_gold_number_rejects(text):
    with pytest.raises(ValueError):
        parse_gold_number(text)


def test_unknown_task_and_split(shared_data):
    with pytest.raises(TaskError, match="unknown task 'svampp'"):
        get_task("svampp")
    with pytest.raises(TaskError, match="no split 'dev'"):
        load_problems("svamp", "dev", shared_data)


def test_missing_source_file_names_the_file(tmp_path):
    with pytest.raises(TaskError, match=r"missing source file .*SVAMP\.json"):
        load_problems("svamp", "full", tmp_path)


def _custom_rows():
    return pl.DataFrame(
        {"uid": ["a", "b", "c"], "body": ["Tom has 3 apples.", "x", "y"], "q": ["How many?", "q2", "q3"], "ans": ["3", "1,000", "-2.5"]}
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".json"])
def test_custom_task_formats(tmp_path, suffix):
    df = _custom_rows()
    path = tmp_path / f"mine{suffix}"
    {".csv": df.write_csv, ".jsonl": df.write_ndjson, ".parquet": df.write_parquet, ".json": df.write_json}[suffix](path)
    spec = CustomTask(name="mine", path=path, question=["body", "q"], answer="ans", id="uid")
    problems = load_custom(spec)
    assert [p.gold_number for p in problems] == [3.0, 1000.0, -2.5]
    assert problems[0].question == "Tom has 3 apples. How many?"
    assert problems[0].source_id == "a" and problems[0].task == "mine"
    # identity depends on the file name and id, not on the format it was stored in
    again = load_custom(CustomTask(name="mine", path=path, question=["body", "q"], answer="ans", id="uid"))
    assert [p.problem_id for p in again] == [p.problem_id for p in problems]


def test_custom_task_errors(tmp_path):
    path = tmp_path / "d.csv"
    _custom_rows().write_csv(path)
    with pytest.raises(TaskError, match=r"column 'question' \(mapped to 'question'\) not found; columns: uid, body, q, ans"):
        load_custom(CustomTask(name="d", path=path, question="question", answer="ans"))
    with pytest.raises(TaskError, match=r"file not found: .*nope\.csv"):
        load_custom(CustomTask(name="d", path=tmp_path / "nope.csv", question="q", answer="ans"))
    bad = pl.DataFrame({"q": ["a", "b"], "ans": ["1", "many"]})
    bad.write_csv(path)
    with pytest.raises(TaskError, match=r"d\.csv row 1: gold answer 'many' is not a number \(column 'ans'"):
        load_custom(CustomTask(name="d", path=path, question="q", answer="ans"))
    bools = pl.DataFrame({"q": ["a", "b"], "ans": ["yes", "False"]})
    bools.write_csv(path)
    got = load_custom(CustomTask(name="d", path=path, question="q", answer="ans", answer_type="bool"))
    assert [p.gold_bool for p in got] == [True, False]
    with pytest.raises(ValueError, match="exactly one of 'path' or 'hub'"):
        CustomTask(name="d", question="q", answer="a")
