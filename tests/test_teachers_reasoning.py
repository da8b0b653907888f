"""Reasoning teachers: each provider's mapping of `reasoning:` to its wire format, the trace kept apart from the
answer (and priced), verification judging the answer, and every refusal before any request."""

from __future__ import annotations

import json

import pytest
import yaml

from fakes.anthropic_server import fake_anthropic
from fakes.openai_server import fake_openai
from fakes.recipes import anthropic_teacher, openai_teacher, recipe, synthetic_task
from mixdistill.generate import run_generation
from mixdistill.recipe import Sampling, TeacherSpec
from mixdistill.registry import Registry
from mixdistill.teachers import make_teacher, request_key
from mixdistill.teachers.reasoning import anthropic_thinking, split_think
from mixdistill.verify.pipeline import verify_pending


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def one_build(tmp_path, registry_path, teacher: dict, n: int = 2, **kw):
    r = recipe([synthetic_task(tmp_path, n)], [teacher], modes=["cot"], samples={"cot": 1}, **kw)
    with Registry.open(registry_path) as reg:
        report = run_generation(reg, r, progress=False)
        df = reg.query("SELECT * FROM generations ORDER BY problem_id")
    return report, df


def test_openai_reasoning_model_gets_effort_no_sampling_params_and_reasoning_tokens_priced(tmp_path, registry_path):
    with fake_openai() as srv:  # the fake refuses temperature/top_p/seed for o-series models, as the API does
        report, df = one_build(tmp_path, registry_path, openai_teacher(srv, model="o4-mini", reasoning={"effort": "high"}),
                               sampling={"max_tokens": 4000, "seed": 3})
        (body, _) = [c["body"] for c in srv.generation_requests]
    assert report.ok == 2 and report.errors == 0
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 4000
    assert not {"temperature", "top_p", "seed", "max_tokens"} & body.keys()
    assert df["reasoning_tokens"].to_list() == [256, 256]
    assert (df["completion_tokens"] > 256).all()  # reasoning tokens are part of the completion tokens ...
    expected = (df["prompt_tokens"] * 1.10 + df["completion_tokens"] * 4.40) / 1e6  # ... priced as output (o4-mini)
    assert (df["cost_usd"] - expected).abs().max() < 1e-12
    params = json.loads(df["params"][0])  # the stored settings are the ones sent
    assert params == {"max_tokens": 4000, "reasoning": {"effort": "high"}}


def test_request_keys_of_teachers_without_reasoning_are_unchanged_and_reasoning_enters_keys():
    sampling = Sampling()
    plain = make_teacher(TeacherSpec(provider="openai", model="gpt-4o-mini"))
    assert plain.request_params(sampling) == sampling.model_dump()  # old caches stay valid
    low = make_teacher(TeacherSpec(provider="openai", model="o3", reasoning={"effort": "low"}))
    high = make_teacher(TeacherSpec(provider="openai", model="o3", reasoning={"effort": "high"}))
    keys = {
        request_key(provider="openai", model="o3", prompt_id="p", problem_id="q", mode="cot",
                    sampling=t.request_params(sampling), sample_index=0)
        for t in (low, high)
    }
    assert len(keys) == 2 and low.teacher_id != high.teacher_id != plain.teacher_id


def test_responses_api_keeps_the_reasoning_summary_as_trace(tmp_path, registry_path):
    with fake_openai() as srv:
        teacher = openai_teacher(srv, model="o3", api="responses", reasoning={"effort": "low"})
        report, df = one_build(tmp_path, registry_path, teacher, sampling={"max_tokens": 2000})
        calls = srv.generation_requests
    assert report.ok == 2 and {c["path"] for c in calls} == {"/v1/responses"}
    body = calls[0]["body"]
    assert body["reasoning"] == {"summary": "auto", "effort": "low"} and body["max_output_tokens"] == 2000
    assert body["instructions"] and body["input"][-1]["role"] == "user" and "temperature" not in body
    assert df["response_text"].str.contains("The answer is 42").all()
    assert df["reasoning_text"].str.starts_with("Let me think").all()
    assert df["reasoning_tokens"].to_list() == [16, 16] and df["finish_reason"].to_list() == ["completed"] * 2


def test_anthropic_budget_becomes_extended_thinking_and_blocks_are_kept(tmp_path, registry_path):
    with fake_anthropic(redact=True) as srv:  # the fake refuses temperature != 1 and budgets the API refuses
        teacher = anthropic_teacher(srv, model="claude-sonnet-4-5", reasoning={"budget_tokens": 2048})
        report, df = one_build(tmp_path, registry_path, teacher, sampling={"max_tokens": 4096, "temperature": 0.7})
        body = srv.generation_requests[0]["body"]
    assert report.ok == 2
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] == 4096
    assert "temperature" not in body and "top_p" not in body
    trace = df["reasoning_text"][0]
    assert trace.startswith("Let me think") and "<redacted_thinking>RU5DUllQVEVE</redacted_thinking>" in trace
    assert "Let me think" not in df["response_text"][0]
    assert json.loads(df["params"][0]) == {"max_tokens": 4096, "seed": None, "reasoning": {"budget_tokens": 2048}}


def test_anthropic_effort_becomes_adaptive_thinking_on_the_newest_models(tmp_path, registry_path):
    with fake_anthropic() as srv:
        teacher = anthropic_teacher(srv, model="claude-opus-4-7", reasoning={"effort": "medium"})
        report, _ = one_build(tmp_path, registry_path, teacher, n=1)
        body = srv.generation_requests[0]["body"]
    assert report.ok == 1
    assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "medium"}
    assert [anthropic_thinking(m) for m in ("claude-3-5-haiku-20241022", "claude-3-7-sonnet-20250219",
                                             "claude-opus-4-20250514", "claude-sonnet-4-6", "claude-opus-4-7")] == [
        "none", "budget", "budget", "both", "effort"]


@pytest.mark.parametrize("dialect", ["reasoning_content", "reasoning", "think"])
def test_openai_compatible_trace_is_split_and_verification_judges_the_final_answer(dialect, tmp_path, registry_path):
    with fake_openai(reasoning_format=dialect) as srv:
        teacher = {"provider": "openai-compatible", "model": "qwen3-8b", "base_url": srv.base_url,
                   "reasoning": {"effort": "low"}, "retry_backoff_s": 0.01}
        r = recipe([synthetic_task(tmp_path, 2)], [teacher], modes=["cot"], samples={"cot": 1})
        with Registry.open(registry_path) as reg:
            assert run_generation(reg, r, progress=False).ok == 2
            verify_pending(reg, progress=False)
            df = reg.query("SELECT g.*, v.extracted FROM generations g JOIN verdicts v USING (request_key)")
        body = srv.generation_requests[0]["body"]
    assert body["reasoning_effort"] == "low" and body["temperature"] == 0.7  # open models keep their sampling
    assert df["reasoning_text"].str.contains("first guess: the answer is 7").all()
    assert not df["response_text"].str.contains("think|guess").any()
    assert df["extracted"].to_list() == ["42", "42"]  # the answer, never the trace's 7


def test_split_think_forms():
    assert split_think("<think>a\nb</think>\n\nThe answer is 3.") == ("a\nb", "The answer is 3.")
    assert split_think("reasoning only ends here</think>The answer is 3.") == ("reasoning only ends here", "The answer is 3.")
    assert split_think("no tags, The answer is 3.") == (None, "no tags, The answer is 3.")


REFUSALS = [
    ({"provider": "openai", "model": "gpt-4o-mini", "reasoning": {"effort": "low"}}, {},
     "model 'gpt-4o-mini' is not an OpenAI reasoning model"),
    ({"provider": "openai", "model": "o3", "reasoning": {"budget_tokens": 2000}}, {},
     "take reasoning.effort (low|medium|high), not budget_tokens"),
    ({"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "reasoning": {"budget_tokens": 2000}},
     {"max_tokens": 4000}, "has no extended thinking"),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5", "reasoning": {"effort": "high"}}, {},
     "takes reasoning.budget_tokens, not effort"),
    ({"provider": "anthropic", "model": "claude-opus-4-7", "reasoning": {"budget_tokens": 2000}}, {"max_tokens": 4000},
     "takes adaptive thinking only"),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5", "reasoning": {"budget_tokens": 2000}}, {"max_tokens": 1000},
     "reasoning.budget_tokens 2000 must be below sampling.max_tokens 1000"),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5", "reasoning": {"budget_tokens": 500}}, {},
     "below Anthropic's minimum of 1024"),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1",
      "reasoning": {"budget_tokens": 500}}, {}, "no standard thinking-budget field"),
    ({"provider": "openai-compatible", "model": "m", "base_urls": ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/"]},
     {}, "base_urls: listed twice: http://127.0.0.1:9/v1"),
    ({"provider": "openai-compatible", "model": "m", "base_urls": ["http://127.0.0.1:9/v1", "127.0.0.1:8/v1"]},
     {}, "'127.0.0.1:8/v1' is not an http(s) URL"),
    ({"provider": "openai-compatible", "model": "m", "base_urls": ["http://127.0.0.1:99999/v1"]},
     {}, "has an invalid port"),
    ({"provider": "openai", "model": "o3", "base_urls": ["http://127.0.0.1:9/v1"]},
     {}, "only provider 'openai-compatible' takes a fleet"),
    ({"provider": "anthropic", "model": "claude-sonnet-4-5", "api": "responses"}, {}, "api: 'responses' is an OpenAI API"),
    ({"provider": "openai", "model": "o3", "reasoning": {}}, {}, "give effort (low|medium|high) and/or budget_tokens"),
]


def test_each_refusal_is_one_line_exit_2_before_any_request_and_the_registry_is_unchanged(
        cli, tmp_path, registry_path):
    with fake_openai() as srv:
        ok = recipe([synthetic_task(tmp_path, 2)], [openai_teacher(srv)], modes=["cot"], samples={"cot": 1})
        with Registry.open(registry_path) as reg:
            run_generation(reg, ok, progress=False)
        before = registry_path.read_bytes()
        asked = len(srv.requests_seen)
        for i, (teacher, sampling, message) in enumerate(REFUSALS):
            path = tmp_path / f"bad{i}.yaml"
            path.write_text(yaml.safe_dump({"name": "bad", "tasks": [synthetic_task(tmp_path, 2)], "teachers": [teacher],
                                            "sampling": sampling, "modes": ["cot"]}), encoding="utf-8")
            code, _, err = cli("--registry", str(registry_path), "generate", str(path), "--no-progress")
            assert code == 2 and message in err, (teacher, err)
            assert len(err.strip().splitlines()) == 1, err
        assert len(srv.requests_seen) == asked
    assert registry_path.read_bytes() == before

