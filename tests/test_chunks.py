"""Flat memory: generate and verify walk the plan and the registry in chunks; a run cut into many small chunks stores
exactly what a run of one chunk stores, and counts exactly the same."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pytest

from fakes.recipes import recipe, synthetic_task
from mixdistill.errors import TaskError
from mixdistill.generate import plan_generation, run_generation
from mixdistill.registry import Registry
from mixdistill.shard import shard_of
from mixdistill.tasks import custom
from mixdistill.tasks.custom import CustomTask, load_chunks
from mixdistill.teachers import TeacherError, replay
from mixdistill.teachers.base import request_key, request_keyer
from mixdistill.verify import pipeline
from mixdistill.verify.pipeline import verify_pending

N = 23
VOLATILE = ("run_id", "latency_s", "created_at")  # what differs between two runs that store the same answers


def _question(i: int) -> str:
    return f"Sam has {i} pens and finds {i + 3} more. How many pens does Sam have?"


def _replay_file(tmp_path):
    """CoT for most problems (a wrong one now and then), two CoT samples for some, PoT for every third, none for
    p5 and p17, and two recorded questions that no problem asks (unmatched)."""
    records = []
    for i in range(N):
        if i in (5, 17):
            continue
        stated = 2 * i + 3 + (i % 4 == 1)
        records.append({"question": _question(i), "mode": "cot", "response": f"So {stated}. The answer is {stated}."})
        if i % 2 == 0:
            records.append({"question": _question(i), "mode": "cot", "response": f"The answer is {2 * i + 3}."})
        if i % 3 == 0:
            records.append({"question": _question(i), "mode": "pot", "response": f"ans = {i} + {i + 3}"})
    records[7:7] = [{"question": "A question nobody asks?", "mode": "cot", "response": "The answer is 1."},
                    {"question": "Another stray one?", "mode": "pot", "response": "ans = 2"}]
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    return path


def _stored(reg: Registry) -> dict[str, list]:
    gens = reg.query("SELECT * FROM generations ORDER BY request_key").drop(VOLATILE, strict=False)
    return {"generations": gens.rows(),
            "problems": reg.query("SELECT * FROM problems ORDER BY problem_id").drop(VOLATILE, strict=False).rows(),
            "splits": reg.query("SELECT task, split, problem_id, position FROM problem_splits ORDER BY ALL").rows()}


def _counts(report) -> list[tuple]:
    return [(t.name, t.requests, t.cached, t.ok, t.errors, t.missing, t.unmatched, t.unmatched_examples)
            for t in report.by_teacher.values()]


def test_generation_in_many_chunks_stores_and_counts_what_one_chunk_does(tmp_path, monkeypatch):
    task = synthetic_task(tmp_path, N)
    spec = recipe([task], [{"provider": "replay", "model": "mine", "path": str(_replay_file(tmp_path))}],
                  samples={"cot": 2, "pot": 1})
    with Registry.open(tmp_path / "one.duckdb") as reg:
        one = run_generation(reg, spec, progress=False)
        whole = _stored(reg)
    assert one.ok == 21 + 12 + 8 and one.missing == 2 * N + N - one.ok  # cot: 21 + 12 second samples; pot: 8
    assert one.by_teacher[next(iter(one.by_teacher))].unmatched == 2

    monkeypatch.setattr(custom, "CHUNK", 4)  # 6 chunks of problems, the last one short
    monkeypatch.setattr(replay, "INDEX_BATCH", 5)  # the recordings indexed in many inserts
    with Registry.open(tmp_path / "many.duckdb") as reg:
        many = run_generation(reg, spec, progress=True)
        assert _stored(reg) == whole
        again = run_generation(reg, spec, progress=False)
        assert _stored(reg) == whole
    assert _counts(many) == _counts(one)
    examples = many.by_teacher[next(iter(many.by_teacher))].unmatched_examples
    assert examples == ["a question nobody asks", "another stray one"]  # in the file's order, normalised
    assert again.sent == again.replayed == 0 and again.cached == one.ok and again.missing == one.missing


def test_a_budget_counts_what_later_chunks_already_stored(tmp_path, monkeypatch):
    """The spend a budget starts from is the whole plan's, not the chunks walked so far."""
    from fakes.openai_server import fake_openai
    from fakes.recipes import openai_teacher

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    task = synthetic_task(tmp_path, 6)
    base = {"modes": ["cot"], "samples": {"cot": 1}}
    with fake_openai() as srv:
        teacher = openai_teacher(srv, max_concurrency=1, prices={"input_per_mtok": 1.0, "output_per_mtok": 1.0})
        with Registry.open(tmp_path / "r.duckdb") as reg:
            last = run_generation(reg, recipe([task], [teacher], **base), progress=False)
            reg.execute("DELETE FROM generations WHERE problem_id IN (SELECT problem_id FROM problem_splits"
                        " WHERE position < 3)")  # the first chunk's answers gone, the second chunk's kept
            spent = reg.scalar("SELECT sum(cost_usd) FROM generations")
            reg.execute("DELETE FROM problem_splits WHERE position >= 3")  # to be stored again by the next run
            monkeypatch.setattr(custom, "CHUNK", 3)
            capped = run_generation(reg, recipe([task], [teacher], budget={"max_cost_usd": spent}, **base),
                                    progress=False)
            stored = reg.scalar("SELECT count(*) FROM problem_splits")
    assert last.ok == 6 and spent > 0
    assert capped.sent == 0 and capped.stopped and "budget reached" in capped.stopped
    assert stored == 6  # a stopped run still stores every problem of the plan


def test_custom_files_are_read_in_chunks_with_rows_numbered_across_them(tmp_path, monkeypatch):
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": i + 1} for i in range(11)]
    jsonl, csv = tmp_path / "t.jsonl", tmp_path / "t.csv"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    pl.DataFrame(rows).write_csv(csv)
    pl.DataFrame(rows).write_parquet(tmp_path / "t.parquet")

    def spec(path):
        return CustomTask(name="t", path=str(path), question="question", answer="answer", id="id")

    for path in (jsonl, csv, tmp_path / "t.parquet"):
        (whole,) = load_chunks(spec(path))
        monkeypatch.setattr(custom, "CHUNK", 3)
        chunks = list(load_chunks(spec(path)))
        monkeypatch.undo()
        assert len(chunks) >= 4 and max(map(len, chunks)) <= 3
        assert [p for c in chunks for p in c] == whole and len(whole) == 11
    monkeypatch.setattr(custom, "CHUNK", 3)

    rows[9]["id"] = "q2"  # a repeat in a later chunk than the first
    rows[7]["answer"] = "seven"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(Exception, match=r"row 7: gold answer 'seven' is not a number"):
        list(load_chunks(spec(jsonl)))
    rows[7]["answer"] = 8
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(Exception, match=r"row 9: id 'q2' repeats row 2"):
        list(load_chunks(spec(jsonl)))


def test_a_problem_listed_through_two_splits_is_asked_once_in_any_chunk(tmp_path, monkeypatch):
    """Split `second` lists p0-p9, seven of them already in split `first` (same file name and ids): only p7-p9 are
    asked again, whichever chunks they fall in, and both splits' memberships are stored."""
    monkeypatch.setattr(custom, "CHUNK", 3)
    (tmp_path / "b").mkdir()
    first, second = synthetic_task(tmp_path, 7), synthetic_task(tmp_path / "b", 10)
    first["custom"]["split"], second["custom"]["split"] = "first", "second"
    questions = [json.loads(line)["question"] for line in open(second["custom"]["path"], encoding="utf-8")]
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("\n".join(json.dumps({"question": q, "mode": "cot", "response": "The answer is 1."})
                                  for q in questions), encoding="utf-8")
    spec = recipe([first, second], [{"provider": "replay", "model": "x", "path": str(recorded)}], modes=["cot"],
                  samples={"cot": 1})
    plan = plan_generation(spec)
    (requests,) = plan.requests.values()
    assert plan.total == len(requests) == 10 and len({r.problem_id for r in requests}) == 10
    with Registry.open(tmp_path / "r.duckdb") as reg:
        report = run_generation(reg, spec, progress=False)
        splits = dict(reg.query("SELECT split, count(*) FROM problem_splits GROUP BY ALL").rows())
    assert report.ok == 10 and splits == {"first": 7, "second": 10}


def test_csv_records_with_newlines_in_quoted_fields_are_never_cut_between_chunks(tmp_path, monkeypatch):
    """JSONL and CSV are read a chunk of lines at a time (polars' scans of them keep the whole file in memory); a CSV
    record that spans lines (a quoted newline, quotes doubled inside) stays whole, and the header heads every chunk."""
    rows = [{"id": f"q{i}", "question": f'Line one of {i}\nand "two"' if i % 3 == 1 else f"What is {i}?", "answer": i}
            for i in range(10)]
    path = tmp_path / "t.csv"
    pl.DataFrame(rows).write_csv(path)
    assert path.read_text(encoding="utf-8").count("\n") > 11  # records do span lines
    spec = CustomTask(name="t", path=str(path), question="question", answer="answer", id="id")
    (whole,) = load_chunks(spec)
    monkeypatch.setattr(custom, "CHUNK", 2)
    chunks = list(load_chunks(spec))
    assert len(chunks) >= 4
    assert [p for c in chunks for p in c] == whole
    assert [p.question for p in whole] == [r["question"] for r in rows]
    path.write_text("id,question,answer\n", encoding="utf-8")
    with pytest.raises(TaskError, match="no rows"):
        list(load_chunks(spec))


def test_a_replay_of_another_task_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(custom, "CHUNK", 2)
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"question": "Something else entirely?", "mode": "cot", "response": "1"}))
    with pytest.raises(TeacherError, match=r"none of its 1 recorded questions \(cot\) match the requested problems"):
        plan_generation(recipe([synthetic_task(tmp_path, 5)], [{"provider": "replay", "model": "x", "path": str(path)}],
                               modes=["cot"], samples={"cot": 1}))


def test_ids_written_out_are_the_content_hashes():
    from mixdistill.ids import content_hash, problem_id

    for task, source, sid in [("svamp", "file:SVAMP.json", "12"), ('we"ird\\', "hub:a/b\n", "\u2028ü")]:
        assert problem_id(task, source, sid) == content_hash({"task": task, "source": source, "source_id": sid})


def test_request_keys_from_the_template_are_request_key_s():
    sampling = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 256, "seed": None, "stop": ["\n\n", "é"]}
    common = {"provider": "openai", "model": 'we"ird\\model', "prompt_id": "p1", "mode": "pot", "sampling": sampling}
    key = request_keyer(**common)
    for pid, i in [("0123456789abcdef", 0), ('quote"and\\slash', 7), ("ünïcode\u2028", 123)]:
        assert key(pid, i) == request_key(problem_id=pid, sample_index=i, **common)


def test_the_sql_shard_is_shard_of():
    ids = [f"problem-{i}" for i in range(300)]
    con = duckdb.connect()
    con.register("ids", pl.DataFrame({"problem_id": ids}).to_arrow())
    got = con.execute("SELECT problem_id, ('0x' || substr(sha256(problem_id), 1, 16))::UBIGINT % 7 FROM ids").fetchall()
    assert dict(got) == {p: shard_of(p, 7) for p in ids}


def test_verify_in_many_chunks_equals_verify_in_one(tmp_path, monkeypatch):
    task = synthetic_task(tmp_path, N)
    spec = recipe([task], [{"provider": "replay", "model": "mine", "path": str(_replay_file(tmp_path))}],
                  modes=["cot"], samples={"cot": 2})
    results, sizes = [], []
    verify_chunk = pipeline._verify_chunk
    monkeypatch.setattr(pipeline, "_verify_chunk", lambda reg, rule, rows, *a: (sizes.append(rows.height),
                                                                               verify_chunk(reg, rule, rows, *a)))
    for name, chunk in (("one", 10_000), ("many", 3)):
        monkeypatch.setattr(pipeline, "CHUNK", chunk)
        sizes.clear()
        with Registry.open(tmp_path / f"{name}.duckdb") as reg:
            run_generation(reg, spec, progress=False)
            summary = verify_pending(reg, "strict", progress=False)
            verdicts = reg.query("SELECT * EXCLUDE (created_at) FROM verdicts ORDER BY request_key").rows()
            assert verify_pending(reg, "strict", progress=False).pending == 0
        results.append((summary.pending, summary.verified, summary.correct, dict(summary.reasons), verdicts))
        assert sum(sizes) == 33 and (len(sizes) == 1 if chunk > 33 else len(sizes) >= 11 and max(sizes) < 2 * chunk)
    assert results[0] == results[1] and results[0][0] == 33 and results[0][3]["wrong-answer"] > 0
