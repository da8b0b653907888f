"""One generated path -> its final answer and verdict, with the verification package's extraction and rules.

CoT: the answer stated in the text (`extract_cot_answer`). PoT: the program in the text (`extract_program`), run in
the sandbox; a program that crashes, times out, is refused or returns a non-number for a numeric task is a wrong path
with that status, never an error of the run. `status` uses the verification pipeline's reasons (correct,
wrong-answer, no-answer, error, timeout, memory, forbidden, non-numeric, non-finite, gold-missing) plus
`generation-error` for a path the backend could not produce and `no-recording` for a replayed problem without a
recorded output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mixdistill.tasks import Problem
from mixdistill.verify.answers import extract_cot_answer, format_number, parse_bool
from mixdistill.verify.pipeline import apply_conventions, judge, judge_execution
from mixdistill.verify.programs import extract_program
from mixdistill.verify.rules import Rule
from mixdistill.verify.sandbox import ExecResult, Sandbox

VOTING_STATUSES = ("correct", "wrong-answer")  # paths that produced an answer of the task's type


@dataclass(frozen=True)
class JudgedPath:
    extracted: str | None  # canonical answer text, None when the path gave no usable answer
    correct: bool
    status: str

    @property
    def answer(self) -> str | None:
        """The answer this path votes for (None: it does not vote)."""
        return self.extracted if self.status in VOTING_STATUSES else None


def judge_answer(rule: Rule, problem: Problem, answer: str | None) -> bool:
    """Is a canonical answer text right? (Used for the vote winner.)"""
    return judge(rule, problem.answer_type, problem.gold_number, problem.gold_bool, answer).correct


def judge_cot(rule: Rule, problem: Problem, text: str | None) -> JudgedPath:
    answer = extract_cot_answer(text, problem.answer_type, rule.cot_reading)
    j = judge(rule, problem.answer_type, problem.gold_number, problem.gold_bool, answer)
    return JudgedPath(answer, j.correct, j.reason)


def execution_answer(problem: Problem, res: ExecResult) -> str | None:
    """Canonical text of what a program left in `ans`: a finite number, or yes/no for a yes/no task."""
    if res.status != "ok":
        return None
    if problem.answer_type == "bool":
        b = parse_bool(res.answer or "")
        return None if b is None else ("yes" if b else "no")
    if res.answer_number is None or not math.isfinite(res.answer_number):
        return None
    return format_number(float(res.answer_number))


def judge_pot(rule: Rule, problem: Problem, res: ExecResult) -> JudgedPath:
    status, text, number = apply_conventions(rule, problem.answer_type, res.status, res.answer, res.answer_number,
                                             res.printed, res.first_answer, res.first_number)
    res = replace(res, status=status, answer=text, answer_number=number)
    j = judge_execution(rule, problem.answer_type, problem.gold_number, problem.gold_bool,
                        res.status, res.answer, res.answer_number)
    answer = execution_answer(problem, res)
    return JudgedPath(answer if answer is not None else j.extracted, j.correct, j.reason)


NO_PROGRAM = ExecResult("no-answer", error_class="NoProgram", error_message="no Python program found in the output")


def execute(sandbox: Sandbox | None, outputs: Sequence[str | None]) -> list[ExecResult]:
    """Run the program of every PoT output (in the sandbox, all at once); outputs without one get `no-answer`."""
    programs = [extract_program(o) if o is not None else None for o in outputs]
    runnable = [p for p in programs if p is not None]
    if runnable and sandbox is None:
        raise ValueError("PoT paths need a sandbox")
    results = iter(sandbox.run_many(runnable) if runnable else [])
    return [next(results) if p is not None else NO_PROGRAM for p in programs]
