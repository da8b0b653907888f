"""The mix decides what becomes the rationale of a reasoning teacher: the answer alone, or trace and answer; and
drops rationales over a token length. The audit view shows reasoning tokens and cost per verified rationale."""

from __future__ import annotations

import re

import polars as pl

from fakes.openai_server import fake_openai
from fakes.recipes import recipe, synthetic_task
from mixdistill.corpus import build_version, candidates, version_frames
from mixdistill.generate import run_generation
from mixdistill.mix import compose_rationale, mix
from mixdistill.registry import Registry
from mixdistill.verify.pipeline import verify_pending


def solve(req) -> str:
    """Right answers for the synthetic task (`Sam has a pens and finds b more`), as prose or as a program."""
    a, b = map(int, re.findall(r"\d+", req.last_user)[:2])
    if "Python" in req.messages[0]["content"]:
        return f"```python\npens = {a}\nfound = {b}\nans = pens + found\n```"
    return f"Sam has {a} + {b} = {a + b} pens. The answer is {a + b}."


def test_compose_rationale_forms():
    assert compose_rationale("cot", "The answer is 3.", None, "trace-and-answer") == "The answer is 3."
    assert compose_rationale("cot", "The answer is 3.", "think\nmore", "answer") == "The answer is 3."
    assert compose_rationale("cot", "A.", "t1 <redacted_thinking>XYZ</redacted_thinking>", "trace-and-answer") == (
        "<think>\nt1\n</think>\n\nA.")
    program = compose_rationale("pot", "ans = 1 + 2", "add them\n\nthen done", "trace-and-answer")
    assert program == "# add them\n#\n# then done\nans = 1 + 2"
    exec(compile(program, "<rationale>", "exec"), {})  # still a program


def test_trace_and_answer_rationales_length_limit_and_reasoning_audit(tmp_path, registry_path):
    with fake_openai(responder=solve, reasoning_format="reasoning_content") as srv:
        teacher = {"name": "r1", "provider": "openai-compatible", "model": "r1-distill", "base_url": srv.base_url,
                   "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
        base = {"tasks": [synthetic_task(tmp_path, 12)], "teachers": [teacher], "samples": {"cot": 1, "pot": 1},
                "mix": {"validation_fraction": 0.0, "exclude": []}}
        answer_only = recipe(**base)
        with Registry.open(registry_path) as reg:
            run_generation(reg, answer_only, progress=False)
            verify_pending(reg, progress=False)
            _, plain = build_version(reg, answer_only)
            traced = recipe(**{**base, "version": "0.2.0", "mix": {**base["mix"], "rationale": "trace-and-answer"}})
            version, rows = build_version(reg, traced)
            rebuilt = version_frames(reg, version.ref)
            short = recipe(**{**base, "version": "0.3.0",
                              "mix": {**base["mix"], "rationale": "trace-and-answer", "max_rationale_tokens": 40}})
            kept, stats = mix(candidates(reg, short), short.mix, set())
            audit = reg.query("SELECT * FROM audit_reasoning WHERE rule = 'strict' ORDER BY mode").to_dicts()
            spent = reg.query("SELECT mode, sum(cost_usd) AS c FROM generations GROUP BY mode ORDER BY mode")
    mixed = rows["mixed"]
    assert mixed.height == plain["mixed"].height == 24
    assert not plain["mixed"]["rationale"].str.contains("think").any()
    cot = mixed.filter(pl.col("mode") == "cot")["rationale"]
    pot = mixed.filter(pl.col("mode") == "pot")["rationale"]
    assert cot.str.starts_with("<think>\nLet me think.").all()
    assert cot.str.contains(r"</think>\n\nSam has").all()
    assert pot.str.starts_with("# Let me think.").all() and pot.str.contains("\nans = pens \\+ found").all()
    assert rebuilt["mixed"].equals(mixed)  # the registry alone rebuilds the same rationales
    # the traced CoT rationales are longer than 40 pieces, the traced programs are not
    assert set(kept["mixed"]["mode"]) == {"pot"} and kept["mixed"].height == 12 and stats["dropped_over_length"] == 12
    assert [(a["mode"], a["generated"], a["with_trace"], a["verified_correct"]) for a in audit] == [
        ("cot", 12, 12, 12), ("pot", 12, 12, 12)]
    for a, c in zip(audit, spent["c"]):
        assert a["reasoning_tokens"] > 0 and abs(a["cost_per_verified"] - c / 12) < 1e-12
