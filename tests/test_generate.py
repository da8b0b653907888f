"""The generation engine: request identity, the cache, several teachers, the CLI, and recorded SVAMP outputs served
over the real wire protocols."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from typer.testing import CliRunner

from fakes.anthropic_server import fake_anthropic
from fakes.openai_server import fake_openai
from fakes.recipes import anthropic_teacher, openai_teacher, recipe, synthetic_task
from fakes.recorded import NO_RECORDING, RecordedSvamp
from mixdistill.cli import app
from mixdistill.generate import plan_generation, run_generation
from mixdistill.registry import Registry
from mixdistill.teachers import TeacherError
from mixdistill.teachers.replay import normalize_question

KEYS = {"OPENAI_API_KEY": "sk-openai-test-1111", "ANTHROPIC_API_KEY": "sk-ant-test-2222"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def test_request_key_is_the_design_hash_and_teacher_identity_ignores_the_label(tmp_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 1)], [openai_teacher(srv, name="my-label")], modes=["cot"],
                   samples={"cot": 2}, sampling={"temperature": 0.5, "max_tokens": 100, "seed": 7})
        plan = plan_generation(r)
    (teacher,) = plan.teachers
    req = plan.requests[teacher.teacher_id][1]
    expected = {"provider": "openai", "model": "gpt-4o-mini", "prompt_id": req.prompt.prompt_id,
                "problem_id": req.problem_id, "mode": "cot",
                "sampling": {"temperature": 0.5, "top_p": 1.0, "max_tokens": 100, "seed": 7}, "sample_index": 1}
    canonical = json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert req.request_key == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    ident = {"provider": "openai", "model": "gpt-4o-mini", "base_url": srv.base_url}
    assert teacher.teacher_id == hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    other = recipe([synthetic_task(tmp_path, 1)], [openai_teacher(srv)], modes=["cot"], samples={"cot": 2},
                   sampling={"temperature": 0.6, "max_tokens": 100, "seed": 7})
    assert {x.request_key for x in plan_generation(other).requests[teacher.teacher_id]}.isdisjoint(
        {x.request_key for x in plan.requests[teacher.teacher_id]})


def test_a_rerun_sends_nothing_and_each_teacher_keeps_its_identity(tmp_path, registry_path):
    with fake_openai() as oa, fake_anthropic() as an:
        r = recipe([synthetic_task(tmp_path, 4)], [openai_teacher(oa), anthropic_teacher(an)],
                   samples={"cot": 2, "pot": 1})
        with Registry.open(registry_path) as reg:
            first = run_generation(reg, r, progress=False)
            seen = len(oa.requests_seen) + len(an.requests_seen)
            second = run_generation(reg, r, progress=False)
            teachers = reg.query("SELECT name, provider, model, base_url, settings FROM teachers ORDER BY name").to_dicts()
            per = reg.query("SELECT t.provider, count(*) AS n FROM generations JOIN teachers t USING (teacher_id) GROUP BY 1")
            runs = reg.query("SELECT status FROM runs")["status"].to_list()
            untasked = reg.scalar("SELECT count(*) FROM generations g JOIN problems p USING (problem_id)"
                                  " WHERE g.task IS DISTINCT FROM p.task")
        assert len(oa.requests_seen) + len(an.requests_seen) == seen  # zero requests on the re-run
        assert untasked == 0  # each generation keeps its problem's task (the audit views read it)
    assert (first.total, first.ok, first.cached) == (24, 24, 0)
    assert (second.total, second.cached, second.sent) == (24, 24, 0)
    assert [t["provider"] for t in teachers] == ["anthropic", "openai"]
    assert dict(per.iter_rows()) == {"openai": 12, "anthropic": 12}
    assert runs == ["done", "done"]
    assert all(v not in t["settings"] for t in teachers for v in KEYS.values())


def test_two_teachers_with_one_identity_are_refused(tmp_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 1)], [openai_teacher(srv, name="a"), openai_teacher(srv, name="b")])
        with pytest.raises(TeacherError, match="'a' and 'b' share provider and model"):
            plan_generation(r)


def test_progress_bar_run(tmp_path, registry_path, capsys):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 3)], [openai_teacher(srv)])
        with Registry.open(registry_path) as reg:
            assert run_generation(reg, r, progress=True).ok == 6


def test_cli_generate_and_teachers(tmp_path, registry_path):
    runner = CliRunner()
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [openai_teacher(srv, name="gpt-mini")])
        path = tmp_path / "build.yaml"
        path.write_text(json.dumps(r.model_dump(mode="json")), encoding="utf-8")  # JSON is YAML
        out = runner.invoke(app, ["generate", str(path), "--no-progress"])
        assert out.exit_code == 0, out.output
        assert "4 requests: 0 cached, 4 sent, 0 replayed (4 ok, 0 errors)" in out.output
        again = runner.invoke(app, ["generate", str(path), "--no-progress"])
        assert "4 requests: 4 cached, 0 sent" in again.output
    shown = runner.invoke(app, ["teachers", "--recipe", str(path)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "gpt-mini" in shown.output and "$OPENAI_API_KEY set" in shown.output and "0.15 / 0.6" in shown.output
    assert KEYS["OPENAI_API_KEY"] not in shown.output + out.output


def test_cli_missing_key_is_one_line_and_exit_2(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("OPENAI_API_KEY")
    r = recipe([synthetic_task(tmp_path, 1)], [{"provider": "openai", "model": "gpt-4o-mini"}])
    path = tmp_path / "build.yaml"
    path.write_text(json.dumps(r.model_dump(mode="json")), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mixdistill", "generate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: teacher 'openai/gpt-4o-mini': no API key; set the environment variable OPENAI_API_KEY"
    ]


def _recorded_build(shared_data, registry_path, split: str, samples: int):
    responder = RecordedSvamp(shared_data)
    with fake_openai(responder=responder) as oa, fake_anthropic(responder=responder) as an:
        r = recipe([{"task": "svamp", "split": split}],
                   [openai_teacher(oa, max_concurrency=32), anthropic_teacher(an, max_concurrency=32)],
                   samples={"cot": samples, "pot": samples})
        with Registry.open(registry_path) as reg:
            started = time.perf_counter()
            report = run_generation(reg, r, progress=False)
            elapsed = time.perf_counter() - started
            df = reg.query(
                "SELECT g.mode, g.response_text, p.question, p.source_id FROM generations g JOIN problems p USING (problem_id)"
            )
    return responder, report, df, elapsed


def test_recorded_svamp_outputs_over_both_wire_protocols(shared_data, registry_path):
    responder, report, df, _ = _recorded_build(shared_data, registry_path, "test", 2)
    assert (report.total, report.ok, report.errors) == (1600, 1600, 0)
    pot = df.filter(df["mode"] == "pot")
    assert pot["response_text"].str.starts_with("```python\n").sum() + (pot["response_text"] == NO_RECORDING).sum() == 800
    cot = df.filter(df["mode"] == "cot")
    assert cot["response_text"].str.contains("The answer is").mean() > 0.95
    # the answers really are the recorded ones for that question
    recordings = responder.recordings
    for mode, text, question, _ in df.sample(50, seed=0).iter_rows():
        recorded = recordings.get((normalize_question(question), mode))
        expected = NO_RECORDING if not recorded else (f"```python\n{recorded[0]}\n```" if mode == "pot" else recorded[0])
        assert text == expected


@pytest.mark.slow
def test_full_svamp_corpus_build_from_recorded_outputs(shared_data, registry_path):
    """1000 problems x CoT and PoT x 4 samples x 2 teachers = 16,000 generations (about 20-40 s on 2 cores)."""
    responder, report, df, elapsed = _recorded_build(shared_data, registry_path, "full", 4)
    assert (report.total, report.ok) == (16000, 16000)
    assert responder.misses == 2 * 4  # chal-1000 has no Codex program, once per PoT sample and teacher
    assert elapsed < 180


def test_unknown_provider_is_one_line_naming_the_field(tmp_path):
    from mixdistill.errors import RecipeError
    from mixdistill.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: x\ntasks: [{task: svamp}]\nteachers: [{provider: openia, model: gpt-4o}]\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    (line,) = str(err.value).splitlines()
    assert "teachers.0.provider" in line and "openai" in line


def test_a_run_freezes_the_heap_only_while_it_runs(tmp_path, registry_path):
    """Full collections skip the objects that outlive the run (the plan, the libraries), and the caller's heap is
    collected normally again afterwards."""
    import gc

    frozen = []

    def responder(req) -> str:
        frozen.append(gc.get_freeze_count())  # the fake server runs in this process: it sees the heap as the run does
        return "The answer is 3."

    with fake_openai(responder=responder) as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [openai_teacher(srv)], modes=["cot"], samples={"cot": 1})
        assert gc.get_freeze_count() == 0
        with Registry.open(registry_path) as reg:
            assert run_generation(reg, r, progress=False).ok == 2
    assert len(frozen) == 2 and min(frozen) > 0
    assert gc.get_freeze_count() == 0
