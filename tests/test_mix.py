"""Mixing policy: dedupe, k per mode, balance, agreement, quotas, split by problem, contamination guard."""

from __future__ import annotations

import polars as pl
import pytest

from mixdistill.mix import input_sql, mix, model_input, normalise_rationale
from mixdistill.workspace import Workspace
from mixdistill.recipe import MixPolicy


def cand(problem: str, mode: str, rationale: str, teacher: str = "t1", key: str | None = None) -> dict:
    return {
        "request_key": key or f"{problem}-{mode}-{teacher}-{abs(hash(rationale)) % 10**8}",
        "problem_id": problem, "task": "svamp", "source_id": problem, "question": f"question {problem}?",
        "mode": mode, "teacher": teacher, "prompt_id": f"p-{mode}", "rationale": rationale, "answer": "5",
        "gold": "5", "rule": "strict@1",
    }


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows)


def test_normalised_duplicates():
    assert normalise_rationale("pot", "ans = 2 + 3  # add\n") == normalise_rationale("pot", "ans=2+3")
    assert normalise_rationale("cot", "Two  plus\nthree. The answer is 5.") == normalise_rationale(
        "cot", "two plus three. the answer is 5."
    )
    assert normalise_rationale("pot", "ans = (") == "ans = ("  # unparsable code falls back to text


def test_dedupe_and_k_per_mode_and_rows():
    rows = [
        cand("a", "cot", "Add 2 and 3. The answer is 5."),
        cand("a", "cot", "add 2 and 3.  The answer is 5."),  # normalised duplicate
        cand("a", "cot", "Add 2 and 3. The answer is 5.", teacher="t2"),  # exact duplicate from another teacher
        cand("a", "cot", "2 + 3 = 5. The answer is 5."),
        cand("a", "cot", "Five. The answer is 5."),
        cand("a", "pot", "ans = 2 + 3"),
        cand("a", "pot", "ans = 2+3  # sum"),  # normalised duplicate
        cand("a", "pot", "x = 2\nans = x + 3"),
    ]
    configs, stats = mix(frame(rows), MixPolicy(k_per_mode=2, balance_modes=False, validation_fraction=0), set())
    assert stats["dropped_exact_duplicates"] == 1 and stats["dropped_normalised_duplicates"] == 2
    mixed = configs["mixed"]
    assert mixed.filter(pl.col("mode") == "cot").height == 2 and mixed.filter(pl.col("mode") == "pot").height == 2
    assert configs["cot"].height == 2 and configs["pot"].height == 2
    assert set(mixed["input"]) == {"[CoT] question a?", "[PoT] question a?"}
    assert sorted(mixed["id"]) == ["svamp-a-cot-1", "svamp-a-cot-2", "svamp-a-pot-1", "svamp-a-pot-2"]
    assert set(mixed["split"]) == {"train"}


def test_balance_and_agreement():
    rows = [cand("a", "cot", f"c{i}. The answer is 5.") for i in range(3)] + [cand("a", "pot", "ans = 5")]
    rows += [cand("b", "cot", "only prose. The answer is 5.")]
    policy = MixPolicy(k_per_mode=3, validation_fraction=0)
    configs, stats = mix(frame(rows), policy, set())
    counts = configs["mixed"].group_by("problem_id", "mode").len().sort("problem_id", "mode")
    assert counts.rows() == [("a", "cot", 1), ("a", "pot", 1), ("b", "cot", 1)]
    assert stats["dropped_balance"] == 2
    configs, stats = mix(frame(rows), policy.model_copy(update={"require_agreement": True}), set())
    assert set(configs["mixed"]["problem_id"]) == {"a"} and stats["dropped_no_agreement"] == 1


def test_contamination_guard():
    rows = [cand("a", "cot", "x. The answer is 5."), cand("evalprob", "cot", "y. The answer is 5.")]
    configs, stats = mix(frame(rows), MixPolicy(validation_fraction=0), {"evalprob"})
    assert set(configs["mixed"]["problem_id"]) == {"a"} and stats["dropped_contamination"] == 1


def test_teacher_quota():
    rows = [cand(f"p{i}", "cot", f"r{i}", teacher="big") for i in range(8)]
    rows += [cand(f"q{i}", "cot", f"s{i}", teacher="small") for i in range(2)]
    configs, _ = mix(frame(rows), MixPolicy(teacher_quotas={"big": 0.5}, validation_fraction=0), set())
    share = configs["mixed"].group_by("teacher").len().sort("teacher")
    assert share.rows() == [("big", 2), ("small", 2)]


def test_split_by_problem_never_leaks_and_is_deterministic():
    rows = [cand(f"p{i}", m, f"{m} r{i}") for i in range(400) for m in ("cot", "pot")]
    policy = MixPolicy(validation_fraction=0.2, seed=3)
    configs, _ = mix(frame(rows), policy, set())
    mixed = configs["mixed"]
    per_problem = mixed.group_by("problem_id").agg(pl.col("split").n_unique())
    assert per_problem["split"].max() == 1
    share = mixed.filter(pl.col("split") == "validation")["problem_id"].n_unique() / 400
    assert 0.13 < share < 0.27
    again, _ = mix(frame(list(reversed(rows))), policy, set())
    assert again["mixed"].equals(mixed)  # input order does not matter
    other, _ = mix(frame(rows), policy.model_copy(update={"seed": 4}), set())
    assert not other["mixed"]["split"].equals(mixed["split"])


def test_missing_columns_are_rejected():
    with pytest.raises(ValueError, match="candidates lack columns: rationale"):
        mix(frame([cand("a", "cot", "x")]).drop("rationale"), MixPolicy(), set())


def test_input_sql_is_model_input():
    df = pl.DataFrame({"mode": ["cot", "pot"], "question": ["How many? ", "Why {x}?"]})
    with Workspace() as ws:
        ws.append("q", df.with_row_index("n"))
        got = [r[0] for r in ws.execute(f"SELECT {input_sql()} FROM q ORDER BY n")]
    assert got == [model_input("cot", "How many? "), model_input("pot", "Why {x}?")]
