"""Replay teachers: the published Codex PoT programs and PaLM CoT completions, records files, another registry."""

from __future__ import annotations

import json

import pytest

from fakes.recipes import recipe, synthetic_task
from mixdistill.generate import run_generation
from mixdistill.registry import Registry
from mixdistill.teachers import TeacherError

POT_SVAMP = "program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl"
POT_GSM8K = "program-of-thoughts/outputs/gsm8K_s0_e-1_11_17_10_20.jsonl"
COT_SVAMP = "distilling-step-by-step/datasets/svamp/llm"


def test_published_svamp_outputs_replay_onto_every_problem(shared_data, registry_path):
    r = recipe(
        [{"task": "svamp", "split": "full"}],
        [{"provider": "replay", "model": "code-davinci-002", "path": str(shared_data / POT_SVAMP)},
         {"provider": "replay", "model": "palm-540b", "path": str(shared_data / COT_SVAMP)}],
        samples={"cot": 1, "pot": 1},
    )
    with Registry.open(registry_path) as reg:
        report = run_generation(reg, r, progress=False)
        df = reg.query(
            "SELECT t.model, g.mode, count(*) AS n FROM generations g JOIN teachers t USING (teacher_id) GROUP BY ALL"
        )
        luke = reg.query(
            "SELECT g.response_text FROM generations g JOIN problems p USING (problem_id) JOIN teachers t USING (teacher_id)"
            " WHERE p.question LIKE 'Luke scored 84 points%' AND t.model = 'palm-540b'"
        )["response_text"][0]
    by = {(m, mode): n for m, mode, n in df.iter_rows()}
    # Codex has a program for 999 problems (chal-1000 was never run), PaLM a completion for all 1000, via the DSS split
    assert by == {("code-davinci-002", "pot"): 999, ("palm-540b", "cot"): 1000}
    # each teacher is asked only for the mode it has recordings of; chal-1000 has no Codex program
    assert (report.total, report.ok, report.missing) == (2000, 1999, 1)
    assert luke.startswith("Luke scored 84 points after 2 rounds") and "Q:" not in luke
    assert luke.endswith("The answer is (84 / 2).")


def test_a_recording_of_another_task_is_refused_before_anything_is_stored(shared_data, registry_path):
    r = recipe([{"task": "svamp", "split": "test"}],
               [{"provider": "replay", "model": "codex", "path": str(shared_data / POT_GSM8K)}], modes=["pot"],
               samples={"pot": 1})
    with Registry.open(registry_path) as reg:
        with pytest.raises(TeacherError, match=r"gsm8K_s0.*none of its 1318 recorded questions .*match"):
            run_generation(reg, r, progress=False)
        assert reg.table_counts()["problems"] == 0


def test_a_recording_without_the_recipes_modes_is_refused(shared_data):
    from mixdistill.generate import plan_generation

    r = recipe([{"task": "svamp", "split": "test"}],
               [{"provider": "replay", "model": "codex", "path": str(shared_data / POT_SVAMP)}], modes=["cot"],
               samples={"cot": 1})
    with pytest.raises(TeacherError, match=r"recorded questions \(pot\) match the requested problems \(none"):
        plan_generation(r)


def test_records_jsonl_and_sample_indices(tmp_path, registry_path):
    task = synthetic_task(tmp_path, 2)
    q0 = "Sam has 0 pens and finds 3 more. How many pens does Sam have?"
    records = [{"question": q0, "mode": "cot", "response": f"answer {i}. The answer is 3."} for i in range(2)]
    records.append({"question": "  sam has 1 pens and finds 4 more.\nHow many pens does Sam have? ", "mode": "pot",
                    "response": "ans = 1 + 4"})
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in records), encoding="utf-8")
    r = recipe([task], [{"provider": "replay", "model": "mine", "path": str(path)}], samples={"cot": 3, "pot": 1})
    with Registry.open(registry_path) as reg:
        report = run_generation(reg, r, progress=False)
        df = reg.query("SELECT mode, sample_index, response_text FROM generations ORDER BY mode, sample_index")
    assert df.rows() == [("cot", 0, "answer 0. The answer is 3."), ("cot", 1, "answer 1. The answer is 3."),
                         ("pot", 0, "ans = 1 + 4")]
    assert (report.ok, report.missing) == (3, 8 - 3)


def test_the_recordings_index_is_gone_when_the_generation_ends(tmp_path, registry_path):
    """A build goes on to mix and export: it must not hold every recording (memory and a temporary file) meanwhile."""
    from pathlib import Path

    from mixdistill.generate import plan_generation

    task = synthetic_task(tmp_path, 2)
    path = tmp_path / "recorded.jsonl"
    path.write_text(json.dumps({"question": "Sam has 0 pens and finds 3 more. How many pens does Sam have?",
                                "mode": "cot", "response": "The answer is 3."}), encoding="utf-8")
    r = recipe([task], [{"provider": "replay", "model": "mine", "path": str(path)}], modes=["cot"],
               samples={"cot": 1})
    plan = plan_generation(r)
    (teacher,) = plan.teachers
    folder = Path(teacher.index._dir.name)
    assert folder.is_dir()
    with Registry.open(registry_path) as reg:
        assert run_generation(reg, r, progress=False, plan=plan).ok == 1
    assert teacher.index is None and not folder.exists()


def test_replay_from_another_registry(tmp_path, registry_path, monkeypatch):
    from fakes.openai_server import fake_openai
    from fakes.recipes import openai_teacher

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    source = tmp_path / "source.duckdb"
    task = synthetic_task(tmp_path, 3)
    with fake_openai() as srv, Registry.open(source) as reg:
        run_generation(reg, recipe([task], [openai_teacher(srv, name="teacher-a")]), progress=False)
        original = reg.query("SELECT mode, response_text FROM generations ORDER BY ALL").rows()
    r = recipe([task], [{"provider": "replay", "model": "teacher-a", "path": str(source)}])
    with Registry.open(registry_path) as reg:
        assert run_generation(reg, r, progress=False).ok == 6
        replayed = reg.query("SELECT mode, response_text FROM generations ORDER BY ALL").rows()
    assert replayed == original


def test_unreadable_replay_sources(tmp_path):
    from mixdistill.generate import plan_generation

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "mode": "cot", "response": "r"}\nnot json\n')
    task = synthetic_task(tmp_path, 1)
    with pytest.raises(TeacherError, match=r"bad.jsonl: line 2 is not JSON"):
        plan_generation(recipe([task], [{"provider": "replay", "model": "x", "path": str(bad)}]))
    with pytest.raises(TeacherError, match="replay file not found"):
        plan_generation(recipe([task], [{"provider": "replay", "model": "x", "path": str(tmp_path / "nope.jsonl")}]))


def test_a_json_list_of_records(tmp_path, registry_path):
    path = tmp_path / "recorded.json"
    q = "Sam has 0 pens and finds 3 more. How many pens does Sam have?"
    path.write_text(json.dumps([{"question": q, "mode": "pot", "response": "ans = 0 + 3"}], indent=2))
    r = recipe([synthetic_task(tmp_path, 1)], [{"provider": "replay", "model": "mine", "path": str(path)}],
               modes=["pot"], samples={"pot": 1})
    with Registry.open(registry_path) as reg:
        assert run_generation(reg, r, progress=False).ok == 1


def test_normalisation_fields_mapping_and_unmatched_records_through_the_console_script(tmp_path, registry_path):
    """Questions match up to NFKC, case, whitespace and punctuation; other field names are mapped by `fields:`;
    records that match no problem are counted and shown."""
    import subprocess
    import sys

    import yaml

    from mixdistill.teachers.replay import normalize_question

    assert normalize_question("Sam has ３ pens…\nHow many?") == normalize_question("sam has 3 pens how many")
    assert normalize_question("It costs 3.5 dollars.") != normalize_question("It costs 35 dollars")
    task = synthetic_task(tmp_path, 3)
    records = [
        # a final "." where the task has "?", full-width digits, odd spacing
        {"problem": "Sam has ０ pens and finds ３ more.  How many pens does Sam have.", "output": "ans = 0 + 3"},
        {"problem": "SAM HAS 1 PENS AND FINDS 4 MORE, HOW MANY PENS DOES SAM HAVE", "output": "ans = 1 + 4"},
        {"problem": "A question no problem of the recipe asks?", "output": "ans = 99"},
    ]
    path = tmp_path / "tool-outputs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in records), encoding="utf-8")
    teacher = {"provider": "replay", "model": "mine", "path": str(path),
               "fields": {"question": "problem", "response": "output", "mode": "pot"}}
    spec = recipe([task], [teacher], modes=["pot"], samples={"pot": 1})
    recipe_file = tmp_path / "build.yaml"
    recipe_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    done = subprocess.run([sys.executable, "-m", "mixdistill", "--registry", str(registry_path), "generate",
                           str(recipe_file), "--no-progress"], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    assert "1 recorded questions match no problem of the recipe (first: 'a question no problem of the recipe asks')" \
        in done.stdout, done.stdout
    assert "1 without a recording" in done.stdout
    with Registry.open(registry_path, read_only=True) as reg:
        rows = reg.query("SELECT response_text FROM generations ORDER BY ALL")["response_text"].to_list()
    assert rows == ["ans = 0 + 3", "ans = 1 + 4"]
