"""Kill -9 a running `mixdistill generate` and restart it: the build completes, and the teacher is asked again only
for the requests whose answers were not stored (a pending Batch API job is picked up, not resubmitted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fakes.openai_server import fake_openai
from fakes.recipes import openai_teacher, recipe, synthetic_task
from mixdistill.generate import FLUSH_EVERY_S, run_generation
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
            stored = reg.scalar("SELECT count(*) FROM generations WHERE status = 'ok'")
            # it never got to say goodbye: the next open finds its process gone and records it interrupted
            assert reg.scalar("SELECT status FROM runs") == "interrupted"
            report = run_generation(reg, spec, progress=False)
            final = reg.scalar("SELECT count(DISTINCT request_key) FROM generations WHERE status = 'ok'")
        asked_after = len(srv.generation_requests) - asked_before
    assert 0 < stored < total
    # lost = answers in flight or received in the last write interval (80 req/s here x FLUSH_EVERY_S), nothing more
    assert asked_before - stored <= concurrency + 80 * FLUSH_EVERY_S + 8
    assert (report.cached, report.sent, report.ok) == (stored, total - stored, total - stored)
    assert asked_after == total - stored
    assert final == total


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
