"""Anthropic backend against the loopback fake: Messages, retries, auth, unknown model, Message Batches."""

from __future__ import annotations

import logging

import pytest

from fakes.anthropic_server import fake_anthropic
from fakes.recipes import anthropic_teacher, recipe, synthetic_task
from mixdistill.generate import run_generation
from mixdistill.registry import Registry
from mixdistill.teachers import TeacherFatalError

KEY = "sk-ant-test-abcdef0123456789"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def test_messages_one_call_per_sample_with_system_apart(tmp_path, registry_path):
    with fake_anthropic(api_key=KEY) as srv:
        r = recipe([synthetic_task(tmp_path, 3)], [anthropic_teacher(srv)], samples={"cot": 2, "pot": 1})
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            df = reg.query("SELECT * FROM generations")
        calls = srv.generation_requests
    assert report.ok == 9 and len(calls) == 9
    body = calls[0]["body"]
    assert body["model"] == "claude-3-5-haiku-20241022" and body["max_tokens"] == 512
    assert "Python" in body["system"] or "step by step" in body["system"]
    assert body["messages"][0]["role"] == "user" and body["messages"][-1]["content"].startswith("Question: Sam has")
    assert "top_p" not in body  # only sent when it restricts sampling
    assert df["finish_reason"].unique().to_list() == ["end_turn"]
    expected = (df["prompt_tokens"] * 0.8 + df["completion_tokens"] * 4.0) / 1e6
    assert (df["cost_usd"] - expected).abs().max() < 1e-12


def test_overloaded_and_rate_limited_calls_are_retried(tmp_path, registry_path):
    with fake_anthropic() as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [anthropic_teacher(srv, max_concurrency=1)], modes=["cot"],
                   samples={"cot": 1})
        srv.inject("529")
        srv.inject("429", retry_after=0.05)
        srv.inject("drop")
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
        assert len(srv.generation_requests) == 2 + 3
    assert (report.ok, report.errors) == (2, 0)


def test_bad_key_is_fatal_and_not_leaked(tmp_path, registry_path, monkeypatch, caplog):
    wrong = "sk-ant-WRONG-secret-424242"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    with fake_anthropic(api_key=KEY) as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [anthropic_teacher(srv)])
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherFatalError, match="HTTP 401.*ANTHROPIC_API_KEY") as err:
                run_generation(reg, r, progress=False)
    assert wrong not in str(err.value) and wrong not in caplog.text
    assert wrong.encode() not in registry_path.read_bytes()


def test_unknown_model_is_fatal(tmp_path, registry_path):
    with fake_anthropic(models={"claude-3-5-haiku-20241022"}) as srv:
        r = recipe([synthetic_task(tmp_path, 1)], [anthropic_teacher(srv, model="claude-nope")])
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherFatalError, match="claude-nope.*HTTP 404"):
                run_generation(reg, r, progress=False)


def test_message_batches_roundtrip(tmp_path, registry_path):
    with fake_anthropic(batch_delay=0.1) as srv:
        r = recipe([synthetic_task(tmp_path, 3)], [anthropic_teacher(srv, batch=True, batch_poll_s=0.05)],
                   samples={"cot": 1, "pot": 1})
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            df = reg.query("SELECT * FROM generations")
            batch = reg.query("SELECT * FROM batches").to_dicts()
            members = reg.query("SELECT request_key FROM batch_requests")["request_key"].to_list()
        assert srv.generation_requests == []
    assert report.ok == 6 and len(batch) == 1 and batch[0]["status"] == "ingested"
    assert set(members) == set(df["request_key"])
    expected = (df["prompt_tokens"] * 0.8 + df["completion_tokens"] * 4.0) / 1e6 / 2
    assert (df["cost_usd"] - expected).abs().max() < 1e-12


def test_temperature_above_anthropics_range_is_refused(tmp_path):
    from mixdistill.generate import plan_generation
    from mixdistill.teachers import TeacherError

    r = recipe([synthetic_task(tmp_path, 1)], [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}],
               sampling={"temperature": 1.2})
    with pytest.raises(TeacherError, match="temperature 1.2 is above Anthropic's maximum of 1"):
        plan_generation(r)
