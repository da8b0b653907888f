"""Evaluation on recorded outputs (offline): published programs replayed as student samples must score what
re-executing them gives; crashing programs are wrong paths; an interrupted run resumes from the stored samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixdistill.errors import MixdistillError
from mixdistill.evaluate import EvalError, run_eval
from mixdistill.evaluate.backends import ReplayBackend
from mixdistill.recipe import EvalRecipe
from mixdistill.registry import Registry
from mixdistill.teachers.replay import normalize_question
from mixdistill.verify.pipeline import judge_execution
from mixdistill.verify.rules import get_rule
from mixdistill.verify.sandbox import Sandbox

POT_FILE = "program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl"
COT_DIR = "distilling-step-by-step/datasets/svamp/llm"


def recipe(**kw) -> EvalRecipe:
    base = {"name": "t", "model": "recorded", "backend": "replay", "tasks": [{"task": "svamp", "split": "test"}]}
    return EvalRecipe.model_validate({**base, **kw})


def samples(registry_path: Path, eval_id: str) -> list[dict]:
    with Registry.open(registry_path, read_only=True) as reg:
        return reg.query("SELECT * FROM eval_samples WHERE eval_id = ? ORDER BY problem_id, sample_index",
                         [eval_id]).to_dicts()


def test_vote_over_published_programs_equals_reexecution(shared_data, registry_path):
    r = recipe(modes=["pot"], recordings={"pot": shared_data / POT_FILE}, tasks=[{"task": "svamp", "split": "full"}])
    [result] = run_eval(r, registry_path, shared_data, progress=False)
    [pot] = result.modes
    # independently: every published program run in the sandbox, judged against the file's own gold answer
    records = [json.loads(line) for line in (shared_data / POT_FILE).read_text().splitlines() if line.strip()]
    records = [rec for rec in records if "generated" in rec]
    with Sandbox() as sb:
        executed = sb.run_many([rec["generated"][0] for rec in records])
    strict = get_rule("strict")
    by_question = {
        normalize_question(f"{rec.get('passage', '')} {rec['question']}"):
            judge_execution(strict, "number", float(rec["answer"]), None, res.status, res.answer, res.answer_number).correct
        for rec, res in zip(records, executed)
    }
    assert sum(by_question.values()) == 848 == pot.score.correct  # 999 programs; chal-1000 has none (a wrong path)
    assert pot.score.n == 1000 and pot.score.paths == 1000
    with Registry.open(registry_path, read_only=True) as reg:
        rows = reg.query("SELECT p.question, s.correct, s.status FROM eval_samples s JOIN problems p USING (problem_id)"
                         " WHERE s.eval_id = ?", [pot.eval_id]).to_dicts()
        summary = reg.query("SELECT n, correct, accuracy, k FROM evals WHERE eval_id = ?", [pot.eval_id]).to_dicts()
    mismatched = [r for r in rows if by_question.get(normalize_question(r["question"]), False) != r["correct"]]
    assert mismatched == []
    assert [r["status"] for r in rows].count("generation-error") == 1
    assert summary == [{"n": 1000, "correct": 848, "accuracy": 0.848, "k": 1}]


def test_md_vote_over_published_cot_and_pot(shared_data, registry_path):
    r = recipe(recordings={"cot": shared_data / COT_DIR, "pot": shared_data / POT_FILE})
    [result] = run_eval(r, registry_path, shared_data, progress=False)
    acc = {m.mode: m.score for m in result.modes}
    assert (acc["cot"].correct, acc["pot"].correct, acc["md"].correct) == (156, 168, 168)
    # k=1 per mode: both agree, or they tie and PoT's answer wins; CoT decides only where PoT gave no answer
    cot = {s["problem_id"]: s for s in samples(registry_path, result.modes[0].eval_id)}
    pot = {s["problem_id"]: s for s in samples(registry_path, result.modes[1].eval_id)}
    voting = ("correct", "wrong-answer")
    expected = sum(pot[p]["correct"] if pot[p]["status"] in voting else cot[p]["correct"] for p in pot)
    assert acc["md"].correct == expected
    assert acc["md"].ties == sum(1 for p in pot if pot[p]["status"] in voting and cot[p]["status"] in voting
                                 and float(pot[p]["extracted"]) != float(cot[p]["extracted"]))
    assert acc["md"].oracle == 181  # a problem is right in at least one mode


def test_crashing_programs_are_wrong_paths(tmp_path, registry_path):
    questions = ["How much is 2 plus 3?", "How much is 10 minus 4?", "How much is 6 times 7?"]
    task = tmp_path / "arith.jsonl"
    task.write_text("\n".join(json.dumps({"q": q, "a": a}) for q, a in zip(questions, [5, 6, 42])))
    programs = {  # three paths each: right, crash, other failures
        questions[0]: ["ans = 2 + 3", "ans = 1 / 0", "while True:\n    pass"],
        questions[1]: ["raise SystemExit(3)", "ans = 10 - 4", "ans = 10 - 3"],
        questions[2]: ["import os\nos.system('echo hi')\nans = 42", "ans = [6 * 7]", "ans = 6 * 7"],
    }
    rec = tmp_path / "paths.jsonl"
    rec.write_text("\n".join(json.dumps({"question": q, "mode": "pot", "response": p}) for q, ps in programs.items() for p in ps))
    r = recipe(modes=["pot"], k=3, recordings={"pot": rec}, program_timeout_s=0.5,
               tasks=[{"custom": {"name": "arith", "path": str(task), "question": "q", "answer": "a"}}])
    [result] = run_eval(r, registry_path, tmp_path, progress=False)
    rows = samples(registry_path, result.modes[0].eval_id)
    by_q = {}
    for q, ps in programs.items():
        by_q[q] = [next(s["status"] for s in rows if s["output"] == p) for p in ps]
    assert by_q[questions[0]] == ["correct", "error", "timeout"]
    assert by_q[questions[1]][1:] == ["correct", "wrong-answer"] and by_q[questions[1]][0] in ("error", "no-answer")
    assert by_q[questions[2]][1:] == ["non-numeric", "correct"] and by_q[questions[2]][0] in ("forbidden", "error")
    # votes: q0 one valid path ("5") -> right; q1 "6" vs "7" tie -> sample 1 first -> right; q2 "42" -> right
    assert result.modes[0].score.correct == 3 and result.modes[0].score.ties == 1


class Interrupting(ReplayBackend):
    """Fails on the n-th generate() call, like a run killed half-way."""

    def __init__(self, recipe, fail_at: int):
        super().__init__(recipe)
        self.calls, self.fail_at = 0, fail_at

    def generate(self, batch, k):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().generate(batch, k)


def test_interrupted_run_resumes_from_stored_samples(shared_data, tmp_path, registry_path):
    r = recipe(modes=["cot", "pot"], batch_size=30, max_concurrency=1,
               recordings={"cot": shared_data / COT_DIR, "pot": shared_data / POT_FILE})
    with pytest.raises(KeyboardInterrupt):
        run_eval(r, registry_path, shared_data, progress=False, backend=Interrupting(r, fail_at=10))
    with Registry.open(registry_path, read_only=True) as reg:
        stored = reg.scalar("SELECT count(*) FROM eval_samples")
        status = reg.scalar("SELECT status FROM runs WHERE kind = 'eval'")
    assert stored == 200 + 60 and status == "interrupted"  # 7 CoT batches (200 problems) + 2 PoT batches of 30
    [resumed] = run_eval(r, registry_path, shared_data, progress=False)
    assert resumed.generated_paths == 140  # only the PoT problems not stored yet
    [fresh] = run_eval(r, tmp_path / "fresh.duckdb", shared_data, progress=False)
    assert [(m.mode, m.score) for m in resumed.modes] == [(m.mode, m.score) for m in fresh.modes]
    [again] = run_eval(r, registry_path, shared_data, progress=False)
    assert again.generated_paths == 0  # complete: nothing to generate, the summary is recomputed
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.scalar("SELECT count(*) FROM eval_samples") == 400
        assert reg.scalar("SELECT count(*) FROM evals") == 3


def test_k_larger_than_the_recordings(shared_data, registry_path):
    r = recipe(modes=["pot"], k=5, recordings={"pot": shared_data / POT_FILE})
    with pytest.raises(EvalError, match=r"k: 5 paths per mode, but recordings.pot holds at most 1 per question"):
        run_eval(r, registry_path, shared_data, progress=False)


def test_split_without_gold_answers_is_refused(tmp_path, registry_path):
    task = tmp_path / "nogold.csv"
    task.write_text("q,a\nHow much is 1 plus 1?,\n")
    rec = tmp_path / "r.jsonl"
    rec.write_text(json.dumps({"question": "How much is 1 plus 1?", "mode": "pot", "response": "ans = 2"}))
    r = recipe(modes=["pot"], recordings={"pot": rec},
               tasks=[{"custom": {"name": "nogold", "path": str(task), "question": "q", "answer": "a"}}])
    with pytest.raises(MixdistillError, match="gold answer is missing"):
        run_eval(r, registry_path, tmp_path, progress=False)
