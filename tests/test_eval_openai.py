"""The OpenAI-compatible backend against the loopback fake: a teacher baseline with few-shot chat prompts, a student
served with raw prompts on /completions, servers that ignore `n`, failures and keys."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from fakes.loopback import FakeRequest
from fakes.openai_server import FakeOpenAI

from mixdistill.evaluate import EvalError, run_eval
from mixdistill.recipe import EvalRecipe
from mixdistill.registry import Registry

QUESTIONS = ["Ann has 3 pens and gets 4 more. How many pens?", "A box holds 6 eggs. How many eggs in 2 boxes?"]
GOLDS = [7, 12]


def teacher_responder(req: FakeRequest) -> str:
    """Right in PoT; in CoT right on sample 0 only (sample 1 says 99, later samples 5)."""
    numbers = [int(n) for n in re.findall(r"\d+", req.last_user)]
    right = numbers[0] + numbers[1] if "more" in req.last_user else numbers[0] * numbers[1]
    system = req.messages[0]["content"].lower() if req.messages and req.messages[0]["role"] == "system" else ""
    if "python" in system:
        return f"```python\na = {numbers[0]}\nans = {right}\n```"
    return f"So the answer is {right if req.sample == 0 else 99 if req.sample == 1 else 5}."


@dataclass
class FakeServer(FakeOpenAI):
    """The fake plus the legacy /v1/completions route that vLLM and llama.cpp servers keep for raw prompts;
    `max_n` makes it ignore `n` beyond that many choices, as some servers do."""

    max_n: int | None = None

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_post("/v1/completions", self.text_completion)

    def completion(self, body: dict) -> dict:
        if self.max_n is not None:
            body = {**body, "n": min(int(body.get("n") or 1), self.max_n)}
        return super().completion(body)

    async def text_completion(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen(request, body)
        if (failed := self.auth_error(request) or await self.apply_fault(request)) is not None:
            return failed
        n = int(body.get("n") or 1)
        prompt = body["prompt"]
        texts = ["ans = 7" if "[PoT]" in prompt else f"The answer is {7 + i}." for i in range(n)]
        return web.json_response({"id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
                                  "model": body["model"], "usage": {"completion_tokens": 3 * n, "prompt_tokens": 5},
                                  "choices": [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]})


@pytest.fixture
def task_file(tmp_path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"q": q, "a": a}) for q, a in zip(QUESTIONS, GOLDS)))
    return path


def recipe(srv, task_file: Path, **kw) -> EvalRecipe:
    base = {"name": "srv", "model": "teacher-model", "backend": "openai-compatible", "base_url": srv.base_url,
            "prompt": "few-shot", "shots": 2, "k": 3, "sampling": {"temperature": 0.8, "max_tokens": 64, "seed": 5},
            "tasks": [{"custom": {"name": "pens", "path": str(task_file), "question": "q", "answer": "a"}}]}
    return EvalRecipe.model_validate({**base, **kw})


def _statuses(registry_path: Path, mode: str) -> list[str]:
    with Registry.open(registry_path, read_only=True) as reg:
        return reg.query("SELECT status FROM eval_samples WHERE mode = ? ORDER BY problem_id, sample_index", [mode])["status"].to_list()


def test_teacher_baseline_with_few_shot_chat_prompts(task_file, tmp_path, registry_path):
    with FakeServer(responder=teacher_responder) as srv:
        [result] = run_eval(recipe(srv, task_file), registry_path, tmp_path, progress=False)
        bodies = [r["body"] for r in srv.generation_requests]
    assert len(bodies) == 4  # 2 problems x 2 modes, k=3 choices in one call each
    assert {b["n"] for b in bodies} == {3} and {b["temperature"] for b in bodies} == {0.8}
    assert all(b["messages"][0]["role"] == "system" and len(b["messages"]) == 1 + 2 * 2 + 1 for b in bodies)
    assert len({b["seed"] for b in bodies}) == 4  # one seed per (problem, mode)
    score = {m.mode: m.score for m in result.modes}
    # CoT: 7/12, 99, 5 -> three different answers, tie -> sample 0 (right); PoT all right; MD right
    assert (score["cot"].correct, score["cot"].ties, score["cot"].paths_correct) == (2, 2, 2)
    assert (score["pot"].correct, score["md"].correct) == (2, 2)
    assert _statuses(registry_path, "pot") == ["correct"] * 6


def test_server_that_ignores_n_is_asked_again(task_file, tmp_path, registry_path):
    with FakeServer(responder=teacher_responder, max_n=1) as srv:
        [result] = run_eval(recipe(srv, task_file, modes=["cot"]), registry_path, tmp_path, progress=False)
        seeds = sorted(r["body"]["seed"] for r in srv.generation_requests)
    assert len(seeds) == 6 and len(set(seeds)) == 6
    assert result.modes[0].score.paths == 6


def test_student_on_completions_endpoint(task_file, tmp_path, registry_path):
    with FakeServer() as srv:
        r = recipe(srv, task_file, prompt="student", k=1, prompt_template="Q: {input}\nA:")
        [result] = run_eval(r, registry_path, tmp_path, progress=False)
        bodies = [x["body"] for x in srv.requests_seen if x["path"] == "/v1/completions"]
    assert sorted(b["prompt"] for b in bodies) == sorted(f"Q: [{m}] {q}\nA:" for m in ("CoT", "PoT") for q in QUESTIONS)
    assert {b["temperature"] for b in bodies} == {0.0} and all("seed" not in b for b in bodies)  # k=1: greedy
    score = {m.mode: m.score.correct for m in result.modes}
    assert score == {"cot": 1, "pot": 1, "md": 1}  # the fake always answers 7
    assert result.generated_tokens == 4 * 3


def test_failed_paths_are_wrong_not_fatal(task_file, tmp_path, registry_path):
    with FakeServer(responder=teacher_responder) as srv:
        srv.inject("malformed")
        [result] = run_eval(recipe(srv, task_file, modes=["pot"], max_concurrency=1), registry_path, tmp_path,
                            progress=False)
    assert _statuses(registry_path, "pot").count("generation-error") == 3
    assert result.modes[0].score.correct == 1


def test_bad_key_stops_with_one_line_and_no_secret(task_file, tmp_path, registry_path, monkeypatch):
    monkeypatch.setenv("EVAL_KEY", "sk-secret-123")
    with FakeServer(responder=teacher_responder, api_key="sk-right") as srv, pytest.raises(EvalError) as info:
        run_eval(recipe(srv, task_file, api_key_env="EVAL_KEY"), registry_path, tmp_path, progress=False)
    assert "HTTP 401" in str(info.value) and "sk-secret-123" not in str(info.value)
    with Registry.open(registry_path, read_only=True) as reg:
        assert "sk-secret-123" not in reg.query("SELECT * FROM runs").write_csv()
