"""The foundation commands, run in-process through the same `main()` the console script uses."""

from __future__ import annotations

import json

import polars as pl

from mixdistill.registry import SCHEMA_VERSION


def test_help_lists_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("tasks", "problems", "sql", "info"):
        assert command in out


def test_tasks_lists_sizes(cli, shared_data):
    code, out, _ = cli("tasks")
    assert code == 0
    assert "svamp" in out and "full (1000)" in out and "test (1319)" in out and "dev (229)" in out


def test_import_then_sql_formats(cli, shared_data, tmp_path):
    code, out, _ = cli("problems", "import", "svamp")
    assert code == 0 and "svamp/full: 1000 problems (1000 new" in out and "svamp/test: 200 problems (0 new" in out
    code, out, _ = cli("problems", "import", "svamp", "--split", "test")
    assert code == 0 and "(0 new, 200 already stored)" in out

    query = "SELECT split, count(*) AS n FROM problem_splits GROUP BY split ORDER BY split"
    code, out, _ = cli("sql", query, "--format", "csv")
    assert code == 0 and out.splitlines() == ["split,n", "full,1000", "test,200", "train,800"]
    code, out, _ = cli("sql", query, "--format", "json")
    assert json.loads(out) == [{"split": "full", "n": 1000}, {"split": "test", "n": 200}, {"split": "train", "n": 800}]
    target = tmp_path / "out.parquet"
    code, out, _ = cli("sql", query, "--format", "parquet", "--output", str(target))
    assert code == 0 and pl.read_parquet(target)["n"].to_list() == [1000, 200, 800]
    code, out, _ = cli("sql", query)
    assert code == 0 and "train" in out and "800" in out

    code, out, _ = cli("info")
    assert code == 0 and f"schema version: {SCHEMA_VERSION}" in out and "problems" in out and "1000" in out


def test_sql_is_read_only_and_errors_are_one_line(cli, shared_data):
    cli("problems", "import", "svamp", "--split", "test")
    code, _, err = cli("sql", "DELETE FROM problems")
    assert code == 2 and err.count("\n") == 1 and "query failed" in err and "read-only" in err
    code, _, err = cli("sql", "SELECT * FROM nope")
    assert code == 2 and "Table with name nope does not exist" in err
    code, _, err = cli("sql", "SELECT 1", "--format", "parquet")
    assert code == 2 and "--format parquet needs --output FILE" in err
    code, out, _ = cli("sql", "SELECT count(*) AS n FROM problems", "-f", "csv")
    assert out.splitlines()[1] == "200"


def test_bad_input_exits_2_and_changes_nothing(cli, shared_data, tmp_path, registry_path):
    cli("problems", "import", "svamp", "--split", "test")
    snapshot = lambda: cli("sql", "SELECT count(*) AS n FROM problems", "-f", "csv")[1]  # noqa: E731
    before = snapshot()

    code, _, err = cli("problems", "import", "svampp")
    assert code == 2 and "unknown task 'svampp'" in err

    data = tmp_path / "mine.csv"
    pl.DataFrame({"q": ["a", "b"], "ans": ["1", "two"]}).write_csv(data)
    code, _, err = cli("problems", "import", "mine", "--file", str(data), "--question", "q", "--answer", "ans")
    assert code == 2 and "row 1: gold answer 'two' is not a number" in err
    code, _, err = cli("problems", "import", "mine", "--file", str(data), "--question", "text", "--answer", "ans")
    assert code == 2 and "column 'text' (mapped to 'question') not found" in err
    code, _, err = cli("problems", "import", "mine", "--file", str(tmp_path / "x.csv"), "--question", "q", "--answer", "a")
    assert code == 2 and "file not found" in err and "x.csv" in err
    assert snapshot() == before

    registry_path.write_bytes(b"garbage" * 100)
    code, _, err = cli("info")
    assert code == 2 and "not a valid DuckDB registry file" in err
    assert registry_path.read_bytes() == b"garbage" * 100


def test_custom_import_from_jsonl(cli, tmp_path):
    data = tmp_path / "word.jsonl"
    pl.DataFrame({"id": ["x1", "x2"], "problem": ["2+2?", "3*3?"], "gold": [4, 9]}).write_ndjson(data)
    code, out, _ = cli("problems", "import", "arith", "--file", str(data), "--question", "problem", "--answer", "gold",
                       "--id", "id", "--split", "test")
    assert code == 0 and "arith/test: 2 problems (2 new" in out
    code, out, _ = cli("sql", "SELECT source_id, gold_number FROM problems ORDER BY 1", "-f", "csv")
    assert out.splitlines() == ["source_id,gold_number", "x1,4.0", "x2,9.0"]
