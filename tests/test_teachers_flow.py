"""Flow-control pieces on their own: retry-after parsing, the price table, the token-per-minute limiter."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from fakes.recipes import recipe, synthetic_task
from mixdistill.generate import plan_generation
from mixdistill.prompts import load_prompt
from mixdistill.recipe import Sampling, TeacherSpec
from mixdistill.teachers import TeacherError, TeacherRequest, make_teacher
from mixdistill.teachers.base import parse_retry_after, split_evenly
from mixdistill.teachers.prices import PriceTable


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": future}) <= 31
    assert parse_retry_after({"retry-after": "99999"}) == 600.0  # capped
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_price_table_longest_prefix_overrides_and_free_backends():
    table = PriceTable()
    assert table.lookup("gpt-4o-mini-2024-07-18").input_per_mtok == 0.15
    assert table.lookup("gpt-4o-2024-08-06").input_per_mtok == 2.50
    assert table.lookup("claude-3-5-haiku-20241022").output_per_mtok == 4.0
    assert not table.lookup("gpt-4o2").known and not table.lookup("mystery").known
    spec = TeacherSpec(provider="openai", model="mystery", prices={"input_per_mtok": 1, "output_per_mtok": 2})
    assert table.for_teacher(spec).cost(1_000_000, 500_000) == pytest.approx(2.0)
    assert table.for_teacher(spec).cost(1_000_000, 500_000, batch=True) == pytest.approx(1.0)
    local = TeacherSpec(provider="openai-compatible", model="llama", base_url="http://127.0.0.1:1/v1")
    assert table.for_teacher(local).cost(10, 10) == 0.0
    assert split_evenly(10, 3) == [4, 3, 3] and split_evenly(None, 2) == [None, None]


def test_a_cost_budget_needs_a_known_price(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    r = recipe([synthetic_task(tmp_path, 1)], [{"provider": "openai", "model": "brand-new-model"}],
               budget={"max_cost_usd": 5})
    with pytest.raises(TeacherError, match="no price known for model 'brand-new-model'.*prices"):
        plan_generation(r)


def test_tokens_per_minute_limiter_holds_calls_back():
    spec = TeacherSpec(provider="openai", model="gpt-4o-mini", tokens_per_minute=60_000)  # 1,000 tokens a second
    teacher = make_teacher(spec)
    prompt = load_prompt("svamp", "cot", 0)
    req = TeacherRequest("k", "p", "What is 1 + 1?", "cot", 0, prompt, Sampling(max_tokens=500))
    assert 550 < req.est_tokens() < 700

    async def three_calls() -> float:
        started = time.perf_counter()
        for _ in range(3):
            await teacher._throttle([req])
        return time.perf_counter() - started

    # the first call fits the bucket; the next two wait for it to drain (~0.15 s and ~0.6 s)
    assert asyncio.run(three_calls()) >= 0.6
