"""OpenAI backend against the loopback fake: n>1 sampling, retries, errors, keys, budget, rate limits, Batch API."""

from __future__ import annotations

import json
import logging

import pytest

from mixdistill.generate import run_generation
from mixdistill.registry import Registry
from mixdistill.teachers import TeacherError, TeacherFatalError
from fakes.openai_server import fake_openai
from fakes.recipes import openai_teacher, recipe, synthetic_task

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def rows(reg: Registry, where: str = "true"):
    return reg.query(f"SELECT * FROM generations WHERE {where} ORDER BY problem_id, mode, sample_index")


def test_samples_share_calls_with_n_and_every_row_has_tokens_and_cost(tmp_path, registry_path):
    with fake_openai(api_key=KEY) as srv:
        r = recipe([synthetic_task(tmp_path, 5)], [openai_teacher(srv)], samples={"cot": 3, "pot": 2})
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            df = rows(reg)
        calls = srv.generation_requests
    assert (report.total, report.ok, report.errors, report.cached) == (25, 25, 0, 0)
    assert len(calls) == 10  # one call per (problem, mode), n samples each
    assert sorted(c["body"].get("n", 1) for c in calls) == [2] * 5 + [3] * 5
    body = calls[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == 512 and body["temperature"] == 0.7
    assert [m["role"] for m in body["messages"]] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert df["status"].unique().to_list() == ["ok"]
    assert df["response_text"].str.starts_with("Sample ").all()
    # the n samples of one call are different choices, stored under their own sample index
    first = df.filter((df["mode"] == "cot")).head(3)["response_text"].to_list()
    assert [t.split(":")[0] for t in first] == ["Sample 0", "Sample 1", "Sample 2"]
    # cost = tokens x gpt-4o-mini list price; tokens split across the call's rows add up to the call's usage
    expected = (df["prompt_tokens"] * 0.15 + df["completion_tokens"] * 0.60) / 1e6
    assert (df["cost_usd"] - expected).abs().max() < 1e-12
    assert report.cost_usd == pytest.approx(df["cost_usd"].sum())


def test_transient_faults_are_retried_and_retry_after_is_honoured(tmp_path, registry_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 3)], [openai_teacher(srv, max_concurrency=1, timeout_s=0.5)],
                   modes=["cot"], samples={"cot": 1})
        srv.inject("429", retry_after=0.3)
        srv.inject("500")
        srv.inject("drop")
        srv.inject("timeout")
        srv.inject("429")
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
        seen = srv.generation_requests
    assert (report.ok, report.errors) == (3, 0)
    assert len(seen) == 3 + 5
    assert seen[1]["t"] - seen[0]["t"] >= 0.3  # waited as long as retry-after said, not the 0.01 s backoff


def test_exhausted_retries_store_an_error_row_that_the_next_run_retries(tmp_path, registry_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 1)], [openai_teacher(srv, max_retries=1)], modes=["cot"], samples={"cot": 1})
        srv.inject("500", count=2)
        with Registry.open(registry_path) as reg:
            first = run_generation(reg, r, progress=False)
            failed = rows(reg)
            second = run_generation(reg, r, progress=False)
            fixed = rows(reg)
    assert (first.ok, first.errors) == (0, 1)
    assert failed["status"].to_list() == ["error"] and "HTTP 500" in failed["error"][0]
    assert (second.cached, second.ok) == (0, 1)
    assert fixed["status"].to_list() == ["ok"] and fixed.height == 1


def test_an_error_row_asked_again_beside_new_keys_is_replaced_in_one_batch(tmp_path, registry_path):
    """Answers are appended; a batch holding a key stored as an error row replaces that row, and the new keys beside
    it are stored too, each once."""
    task = synthetic_task(tmp_path, 4)
    with fake_openai() as srv:
        teacher = openai_teacher(srv, max_retries=0)
        srv.inject("500")
        with Registry.open(registry_path) as reg:
            first = run_generation(reg, recipe([{**task, "limit": 2}], [teacher], modes=["cot"], samples={"cot": 1}),
                                   progress=False)
            second = run_generation(reg, recipe([task], [teacher], modes=["cot"], samples={"cot": 1}), progress=False)
            stored = rows(reg)
    assert (first.ok, first.errors) == (1, 1)
    assert (second.cached, second.ok, second.errors) == (1, 3, 0)
    assert stored.height == 4 and stored["status"].to_list() == ["ok"] * 4
    assert stored["request_key"].n_unique() == 4


def test_unparseable_response_is_stored_with_its_raw_text(tmp_path, registry_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 1)], [openai_teacher(srv)], modes=["cot"], samples={"cot": 1})
        srv.inject("malformed")
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            df = rows(reg)
            assert run_generation(reg, r, progress=False).ok == 1  # an error row is asked again next run
    assert report.errors == 1
    assert df["status"][0] == "error" and df["response_text"][0].startswith('{"id": "broken"')
    assert "unparseable response" in df["error"][0]


def _everything_stored(reg: Registry) -> str:
    return "\n".join(
        json.dumps(reg.query(f'SELECT * FROM "{t}"').to_dicts(), default=str) for t in reg.table_counts()
    )


def test_bad_key_stops_at_once_and_the_key_is_never_stored_logged_or_shown(tmp_path, registry_path, monkeypatch, caplog):
    wrong = "sk-wrong-SECRET-9f8e7d6c5b4a"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    with fake_openai(api_key=KEY) as srv:  # the fake's 401 message echoes the key it was given
        r = recipe([synthetic_task(tmp_path, 40)], [openai_teacher(srv, max_concurrency=4)])
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherFatalError) as err:
                run_generation(reg, r, progress=False)
            stored = _everything_stored(reg)
            run = reg.query("SELECT status, error FROM runs").to_dicts()[0]
        seen = len(srv.generation_requests)
    message = str(err.value)
    assert "HTTP 401" in message and "OPENAI_API_KEY" in message
    assert wrong not in message and wrong not in repr(err.value)
    assert seen <= 4  # stopped at once: only the calls already in flight
    assert run["status"] == "failed" and wrong not in run["error"]
    assert wrong not in stored and KEY not in stored
    assert wrong not in caplog.text
    assert wrong.encode() not in registry_path.read_bytes()


def test_unknown_model_stops_with_a_clear_line(tmp_path, registry_path):
    with fake_openai(models={"gpt-4o-mini"}) as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [openai_teacher(srv, model="gpt-nonexistent")])
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherFatalError, match=r"model 'gpt-nonexistent'.*HTTP 404.*does not exist"):
                run_generation(reg, r, progress=False)


def test_missing_key_is_reported_before_any_request_or_write(tmp_path, registry_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 2)], [openai_teacher(srv)])
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherError, match="no API key; set the environment variable OPENAI_API_KEY"):
                run_generation(reg, r, progress=False)
            counts = reg.table_counts()
        assert srv.requests_seen == []
    assert counts["problems"] == 0 and counts["generations"] == 0 and counts["runs"] == 0


def test_budget_stops_cleanly_and_counts_what_was_already_spent(tmp_path, registry_path):
    with fake_openai() as srv:
        teacher = openai_teacher(srv, max_concurrency=1, prices={"input_per_mtok": 1000.0, "output_per_mtok": 0.0})
        task = synthetic_task(tmp_path, 10)
        base = {"modes": ["cot"], "samples": {"cot": 1}}
        with Registry.open(registry_path) as reg:
            probe = run_generation(reg, recipe([synthetic_task(tmp_path, 1, "probe")], [teacher], **base), progress=False)
            per_call = probe.cost_usd
            capped = run_generation(reg, recipe([task], [teacher], budget={"max_cost_usd": 2.5 * per_call}, **base),
                                    progress=False)
            same_cap = run_generation(reg, recipe([task], [teacher], budget={"max_cost_usd": 2.5 * per_call}, **base),
                                      progress=False)
            done = run_generation(reg, recipe([task], [teacher], **base), progress=False)
    assert capped.ok == 3 and "budget reached" in capped.stopped
    assert same_cap.sent == 0 and same_cap.cached == 3  # the stored spend counts toward the build's budget
    assert (done.cached, done.ok, done.stopped) == (3, 7, None)


def test_requests_per_minute_limit_spreads_the_calls(tmp_path, registry_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 25)], [openai_teacher(srv, requests_per_minute=600)],
                   modes=["cot"], samples={"cot": 1})
        with Registry.open(registry_path) as reg:
            assert run_generation(reg, r, progress=False).ok == 25
        times = [s["t"] for s in srv.generation_requests]
    # 600/min = 10 per second: after the first second's share, 15 more calls need >= 1.5 s
    assert max(times) - min(times) >= 1.3


def test_batch_api_submits_persists_polls_and_ingests_at_half_price(tmp_path, registry_path):
    with fake_openai(batch_delay=0.2) as srv:
        teacher = openai_teacher(srv, batch=True, batch_poll_s=0.05)
        r = recipe([synthetic_task(tmp_path, 4)], [teacher], samples={"cot": 2, "pot": 1})
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            df = rows(reg)
            batches = reg.query("SELECT * FROM batches").to_dicts()
            members = reg.query("SELECT * FROM batch_requests ORDER BY request_key")
        assert srv.generation_requests == []  # nothing went through the synchronous endpoint
        posts = [s["path"] for s in srv.requests_seen if s["method"] == "POST"]
    assert posts == ["/v1/files", "/v1/batches"]
    assert report.ok == 12 and df["status"].unique().to_list() == ["ok"]
    assert len(batches) == 1 and batches[0]["status"] == "ingested"
    assert members["request_key"].to_list() == sorted(df["request_key"].to_list())
    assert members["batch_id"].unique().to_list() == [batches[0]["batch_id"]]
    # each stored with what its answer's row records
    stored = df.select("request_key", "problem_id", "mode", "sample_index", "prompt_id").sort("request_key")
    assert members.select(stored.columns).equals(stored)
    assert df["batch_id"].unique().to_list() == [batches[0]["batch_id"]]
    full_price = (df["prompt_tokens"] * 0.15 + df["completion_tokens"] * 0.60) / 1e6
    assert (df["cost_usd"] - full_price / 2).abs().max() < 1e-12


def test_openai_compatible_server_needs_no_key_and_sends_max_tokens(tmp_path, registry_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with fake_openai() as srv:
        teacher = {"provider": "openai-compatible", "model": "llama-3-8b", "base_url": srv.base_url}
        r = recipe([synthetic_task(tmp_path, 2)], [teacher], samples={"cot": 2, "pot": 1})
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            cost = reg.scalar("SELECT sum(cost_usd) FROM generations")
        calls = srv.generation_requests
    assert report.ok == 6 and len(calls) == 6  # many servers ignore `n`: one sample per call
    assert all("n" not in c["body"] and c["body"]["max_tokens"] == 512 for c in calls)
    assert cost == 0.0


def test_batch_needs_a_provider_with_a_batch_api(tmp_path):
    from mixdistill.generate import plan_generation

    r = recipe([synthetic_task(tmp_path, 1)],
               [{"provider": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", "batch": True}])
    with pytest.raises(TeacherError, match="batch: provider 'openai-compatible' has no Batch API"):
        plan_generation(r)


def test_a_bad_request_stores_an_error_row_but_an_unsupported_parameter_stops_the_build(tmp_path, registry_path):
    with fake_openai() as srv:
        r = recipe([synthetic_task(tmp_path, 3)], [openai_teacher(srv, max_concurrency=1)], modes=["cot"],
                   samples={"cot": 1})
        srv.inject("400")  # this one request is bad (say, too long): stored as an error, the build goes on
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            assert (report.ok, report.errors) == (2, 1)
        srv.inject("400", code="unsupported_value")  # every request would fail the same way: stop
        with Registry.open(registry_path) as reg:
            with pytest.raises(TeacherFatalError, match="HTTP 400"):
                run_generation(reg, r, progress=False)


@pytest.mark.parametrize("teacher, sampling", [
    ({"provider": "openai", "model": "gpt-4o-mini"}, {"seed": 7}),
    ({"provider": "openai", "model": "o4-mini", "reasoning": {"effort": "low"}}, {}),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}, {"temperature": 0.2}),
], ids=["seeded", "reasoning", "compatible"])
def test_the_encoded_body_is_the_body(teacher, sampling, tmp_path):
    """The body sent is spliced from the prompt's pre-encoded few-shot messages; it must decode to `body()` exactly,
    whatever the question holds (quotes, backslashes, braces, the template's own placeholder, non-ASCII, newlines)."""
    from mixdistill.generate import plan_generation

    questions = ['He said "7\\8" {question} ünïcødé\n¿cuántos? 🍎', "plain", "\u2028 \t tab \\u0000"]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "question": q, "answer": i}) for i, q in enumerate(questions)),
                    encoding="utf-8")
    task = {"custom": {"name": "odd", "path": str(path), "question": "question", "answer": "answer", "id": "id"}}
    plan = plan_generation(recipe([task], [teacher], samples={"cot": 3, "pot": 1}, sampling=sampling))
    (t,) = plan.teachers
    chunks = t.chunks(plan.requests[t.teacher_id])
    assert len(chunks) >= 2 * len(questions)
    assert any(len(c) > 1 for c in chunks) or teacher["provider"] == "openai-compatible"  # it sends samples one by one
    for chunk in chunks:
        assert json.loads(t.body_json(chunk)) == t.body(chunk)
