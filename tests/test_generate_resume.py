"""Kill -9 a running `mixdistill generate` and restart it: the build completes, and the teacher is asked again only
for the requests whose answers were not stored (a pending Batch API job is picked up, not resubmitted)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fakes.openai_server import fake_openai
from fakes.recipes import openai_teacher, recipe, synthetic_task
from mixdistill.generate import run_generation
from mixdistill.journal import read_journal
from mixdistill.registry import Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def start_generate(recipe_dict: dict, tmp_path: Path, registry: Path) -> subprocess.Popen:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict), encoding="utf-8")
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "mixdistill", "--registry", str(registry), "generate", str(path), "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"generate exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the build to make progress")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def journaled(registry: Path) -> set[str]:
    """Keys of the answers a killed run received (its journal) but may not have committed."""
    return {r["request_key"] for path in journal_dir_of(registry).glob("*.jsonl") for r in read_journal(path)}


def journal_dir_of(registry: Path) -> Path:
    return registry.with_name(registry.name + ".journal")


def asked_keys(srv) -> list[str]:
    """One identity per generation request the fake answered (system prompt + question; n = 1 here)."""
    return [r["body"]["messages"][0]["content"][:40] + r["body"]["messages"][-1]["content"] for r in srv.generation_requests]


def test_sigkill_mid_build_then_restart_asks_only_for_unstored_answers(tmp_path, registry_path):
    total, concurrency = 300, 4
    with fake_openai(latency=0.05) as srv:
        spec = recipe([synthetic_task(tmp_path, total)], [openai_teacher(srv, max_concurrency=concurrency)],
                      modes=["cot"], samples={"cot": 1})
        proc = start_generate(spec.model_dump(mode="json"), tmp_path, registry_path)
        wait_for(lambda: len(srv.generation_requests) >= 120, proc)
        kill9(proc)
        asked_before = len(srv.generation_requests)
        with Registry.open(registry_path) as reg:
            committed = set(reg.query("SELECT request_key FROM generations WHERE status = 'ok'")["request_key"])
            kept = committed | journaled(registry_path)
            # it never got to say goodbye: the next open finds its process gone and records it interrupted
            assert reg.scalar("SELECT status FROM runs") == "interrupted"
            report = run_generation(reg, spec, progress=False)
            final = reg.scalar("SELECT count(DISTINCT request_key) FROM generations WHERE status = 'ok'")
            untasked = reg.scalar("SELECT count(*) FROM generations g JOIN problems p USING (problem_id)"
                                  " WHERE g.task IS DISTINCT FROM p.task")
        asked_after = len(srv.generation_requests) - asked_before
    assert 0 < len(committed) <= len(kept) < total
    # lost = answers in flight at the kill, nothing more: every received answer was journaled
    assert asked_before - len(kept) <= concurrency
    assert (report.cached, report.sent, report.ok) == (len(kept), total - len(kept), total - len(kept))
    assert asked_after == total - len(kept)
    assert final == total and untasked == 0
    assert not list(journal_dir_of(registry_path).glob("*.jsonl"))  # replayed, committed, removed


def test_sigkill_at_random_moments_pays_twice_only_for_requests_in_flight(tmp_path, registry_path):
    """Kill -9 the same build three times at random moments; every answer the fake sent before a kill, except
    those still in flight, is never asked for again."""
    total, concurrency = 400, 8
    rng = random.Random(1313)
    with fake_openai(latency=0.03) as srv:
        spec = recipe([synthetic_task(tmp_path, total)], [openai_teacher(srv, max_concurrency=concurrency)],
                      modes=["cot"], samples={"cot": 1})
        for kill in range(3):
            before = len(srv.generation_requests)
            proc = start_generate(spec.model_dump(mode="json"), tmp_path, registry_path)
            wait_for(lambda: len(srv.generation_requests) > before, proc)
            time.sleep(rng.uniform(0.05, 0.5))
            if proc.poll() is not None:
                break
            kill9(proc)
            with Registry.open(registry_path, read_only=True) as reg:
                committed = set(reg.query("SELECT request_key FROM generations WHERE status = 'ok'")["request_key"])
            lost = len(set(asked_keys(srv))) - len(committed | journaled(registry_path))
            assert lost <= concurrency, f"kill {kill}: {lost} received answers lost, {concurrency} can be in flight"
        with Registry.open(registry_path) as reg:
            run_generation(reg, spec, progress=False)
            final = reg.scalar("SELECT count(DISTINCT request_key) FROM generations WHERE status = 'ok'")
        asked = asked_keys(srv)
    assert final == total and len(set(asked)) == total


def test_sigkill_while_a_batch_is_pending_then_restart_collects_it(tmp_path, registry_path):
    with fake_openai(batch_delay=3600) as srv:
        spec = recipe([synthetic_task(tmp_path, 5)], [openai_teacher(srv, batch=True, batch_poll_s=0.05)],
                      samples={"cot": 1, "pot": 1})
        proc = start_generate(spec.model_dump(mode="json"), tmp_path, registry_path)
        # a status poll comes after the batch id was stored
        wait_for(lambda: any(s["path"].startswith("/v1/batches/") for s in srv.requests_seen), proc)
        kill9(proc)
        (batch_id,) = srv.batches
        srv.batches[batch_id]["_ends"] = 0  # the provider finishes it while we are down
        with Registry.open(registry_path) as reg:
            assert reg.scalar("SELECT status FROM batches WHERE batch_id = ?", [batch_id]) == "submitted"
            report = run_generation(reg, spec, progress=False)
            ids = reg.query("SELECT DISTINCT batch_id FROM generations")["batch_id"].to_list()
            status = reg.scalar("SELECT status FROM batches WHERE batch_id = ?", [batch_id])
        submissions = [s for s in srv.requests_seen if s["method"] == "POST" and s["path"] == "/v1/batches"]
    assert report.ok == 10 and ids == [batch_id] and status == "ingested"
    assert len(submissions) == 1  # picked up, never paid twice


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_keep_what_was_answered_and_say_so(sig, code, tmp_path, registry_path):
    with fake_openai(latency=0.05) as srv:
        spec = recipe([synthetic_task(tmp_path, 200)], [openai_teacher(srv, max_concurrency=4)],
                      modes=["cot"], samples={"cot": 1})
        proc = start_generate(spec.model_dump(mode="json"), tmp_path, registry_path)
        wait_for(lambda: len(srv.generation_requests) >= 40, proc)
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(30)
        stopped_in = time.monotonic() - t0
        answered = len(srv.generation_requests)
    assert proc.returncode == code
    assert stopped_in < 2.0  # issue 11: within 2 s
    assert "interrupted; everything stored so far is kept" in proc.stderr.read().decode()
    with Registry.open(registry_path) as reg:
        stored = reg.scalar("SELECT count(*) FROM generations WHERE status = 'ok'")
        run = reg.query("SELECT status, error FROM runs").to_dicts()
    assert answered - 4 <= stored <= answered  # only the calls in flight at the interrupt are lost
    assert run == [{"status": "interrupted", "error": "interrupted"}]


def test_a_finished_build_leaves_no_journal(tmp_path, registry_path):
    with fake_openai() as srv:
        spec = recipe([synthetic_task(tmp_path, 3)], [openai_teacher(srv)], modes=["cot"], samples={"cot": 1})
        with Registry.open(registry_path) as reg:
            assert run_generation(reg, spec, progress=False).ok == 3
    assert not journal_dir_of(registry_path).exists()


def test_the_journal_holds_only_answers_not_yet_committed(registry_path):
    """Each commit takes the journal segment holding exactly its rows and deletes it once they are stored, so a run
    killed after millions of answers leaves only its last uncommitted ones to replay (not all of them)."""
    import asyncio

    from mixdistill.generate import Asked, GenerationReport, Sink, TeacherTally
    from mixdistill.journal import Journal
    from mixdistill.prompts import load_prompt
    from mixdistill.recipe import Sampling
    from mixdistill.teachers import TeacherRequest, TeacherResult

    prompt = load_prompt("svamp", "cot", 1)
    reqs = [TeacherRequest(f"k{i}", f"p{i}", f"q{i}?", "cot", 0, prompt, Sampling()) for i in range(30)]
    report = GenerationReport(run_id="r", by_teacher={"t": TeacherTally(name="t")})
    with Registry.open(registry_path) as reg:
        folder = journal_dir_of(registry_path)
        journal = Journal(folder, "r")
        sink = Sink(reg, "r", {r.request_key: Asked.of("t", r, "svamp") for r in reqs}, {"t": "{}"}, report, journal=journal)

        def answer(part):
            sink.add([TeacherResult(r.request_key, "ok", text="The answer is 1.") for r in part])

        def in_journal() -> list[str]:
            return sorted(row["request_key"] for p in folder.glob("*.jsonl") for row in read_journal(p))

        answer(reqs[:10])
        assert in_journal() == sorted(r.request_key for r in reqs[:10])
        asyncio.run(sink.flush())
        assert in_journal() == [] and reg.scalar("SELECT count(*) FROM generations") == 10
        answer(reqs[10:25])
        asyncio.run(sink.flush())
        answer(reqs[25:])  # received, not yet committed: only these are in the journal
        assert in_journal() == sorted(r.request_key for r in reqs[25:])
        assert reg.scalar("SELECT count(*) FROM generations") == 25
        journal.close(remove=False)
