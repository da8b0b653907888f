"""Voting and scoring on a hand-built fixture with known votes, ties and PoT failures (pure functions, no model)."""

from __future__ import annotations

import pytest

from mixdistill.evaluate.paths import JudgedPath, execution_answer, judge_cot, judge_pot
from mixdistill.evaluate.scores import StoredPath, score
from mixdistill.evaluate.vote import PathAnswer, pooled_order, vote, vote_key
from mixdistill.tasks import Problem
from mixdistill.verify.rules import get_rule
from mixdistill.verify.sandbox import ExecResult

STRICT = get_rule("strict")


def P(mode: str, i: int, answer: str | None) -> PathAnswer:
    return PathAnswer(mode, i, answer)


def problem(i: int, gold: float | bool) -> Problem:
    return Problem.make(task="fixture", question=f"q{i}", gold=gold, gold_text=str(gold), source="hand", source_id=str(i),
                        license="none")


# ------------------------------------------------------------------------------------------------ vote()
def test_majority_within_a_mode():
    v = vote([P("cot", 0, "5"), P("cot", 1, "7"), P("cot", 2, "7"), P("cot", 3, None)])
    assert (v.answer, v.votes, v.total, v.tied) == ("7", 2, 3, False)


def test_tie_goes_to_the_answer_met_first():
    assert vote([P("cot", 0, "5"), P("cot", 1, "7")]).answer == "5"
    assert vote([P("cot", 1, "5"), P("cot", 0, "7")]).answer == "7"  # order is by sample index, not list order
    assert vote([P("cot", 0, "5"), P("cot", 1, "7")]).tied


def test_md_pooled_vote_and_default_tie_break_prefers_pot():
    paths = [P("cot", 0, "3"), P("cot", 1, "3"), P("pot", 0, "4"), P("pot", 1, "4")]
    assert vote(paths, {"cot": 1, "pot": 1}).answer == "4"  # 2-2: PoT's first path comes first in the pooled order
    assert vote(paths, {"cot": 1, "pot": 1}, order=("cot", "pot")).answer == "3"
    # a majority across modes beats the tie-break
    assert vote(paths + [P("cot", 2, "3")], {"cot": 1, "pot": 1}).answer == "3"


def test_mode_weights():
    paths = [P("cot", 0, "3"), P("cot", 1, "3"), P("cot", 2, "3"), P("pot", 0, "4"), P("pot", 1, "4")]
    assert vote(paths, {"cot": 1, "pot": 1}).answer == "3"
    assert vote(paths, {"cot": 1, "pot": 2}).answer == "4"  # 3 vs 4 weighted votes
    assert vote(paths, {"cot": 1, "pot": 1.5}).answer == "4"  # 3 vs 3: tie, PoT first
    assert vote(paths, {"cot": 1, "pot": 1.5}).tied
    assert vote(paths, {"cot": 0, "pot": 1}).total == 2  # weight 0: that mode does not vote


def test_no_answer_anywhere():
    v = vote([P("pot", 0, None), P("cot", 0, None)])
    assert v.answer is None and v.total == 0


def test_vote_keys_merge_float_noise_and_spellings():
    assert vote_key("0.30000000000000004") == vote_key("0.3")
    assert vote_key("12.0") == vote_key("12") == "12"
    assert vote_key("-0.0") == vote_key("0")
    assert vote_key("Yes") == "yes"
    assert vote([P("pot", 0, "0.1"), P("pot", 1, "0.30000000000000004"), P("pot", 2, "0.3")]).answer == "0.30000000000000004"


def test_pooled_order():
    paths = [P("cot", 1, "a"), P("pot", 1, "b"), P("cot", 0, "c"), P("pot", 0, "d")]
    assert [(p.mode, p.sample_index) for p in pooled_order(paths)] == [("pot", 0), ("pot", 1), ("cot", 0), ("cot", 1)]


# ------------------------------------------------------------------------------------------------ paths
def test_pot_failures_are_wrong_paths_that_do_not_vote():
    p = problem(0, 12.0)
    crashed = judge_pot(STRICT, p, ExecResult("error", error_class="ZeroDivisionError"))
    timeout = judge_pot(STRICT, p, ExecResult("timeout"))
    listy = judge_pot(STRICT, p, ExecResult("ok", answer="[12]", answer_kind="list"))
    nan = judge_pot(STRICT, p, ExecResult("ok", answer="nan", answer_number=float("nan")))
    right = judge_pot(STRICT, p, ExecResult("ok", answer="12.0", answer_number=12.0))
    assert [j.status for j in (crashed, timeout, listy, nan, right)] == ["error", "timeout", "non-numeric", "non-finite", "correct"]
    assert [j.answer for j in (crashed, timeout, listy, nan)] == [None] * 4
    assert right.answer == "12" and right.correct


def test_bool_task_paths():
    p = problem(1, True)
    assert execution_answer(p, ExecResult("ok", answer="True")) == "yes"
    assert judge_pot(STRICT, p, ExecResult("ok", answer="False")) == JudgedPath("no", False, "wrong-answer")
    assert judge_cot(STRICT, p, "Birds can fly. So the answer is yes.") == JudgedPath("yes", True, "correct")


def test_cot_without_answer():
    assert judge_cot(STRICT, problem(2, 3.0), "I do not know.").status == "no-answer"


# ------------------------------------------------------------------------------------------------ scores
def S(mode, i, extracted, correct, status=None):
    return StoredPath(mode, i, extracted, correct, status or ("correct" if correct else "wrong-answer"))


@pytest.fixture
def fixture():
    """Five problems, 3 CoT + 3 PoT paths each, with known per-mode and MD outcomes."""
    ps = [problem(i, g) for i, g in enumerate([10.0, 20.0, 30.0, 40.0, 50.0])]
    paths = {
        # 0: CoT majority right, PoT majority right -> all right
        ps[0].problem_id: [S("cot", 0, "10", True), S("cot", 1, "10", True), S("cot", 2, "9", False),
                           S("pot", 0, "10", True), S("pot", 1, "10", True), S("pot", 2, None, False, "error")],
        # 1: CoT 1-1 tie (wrong one first) + no-answer; PoT all crash -> CoT wrong, PoT unanswered, MD tie -> wrong
        ps[1].problem_id: [S("cot", 0, "21", False), S("cot", 1, "20", True), S("cot", 2, None, False, "no-answer"),
                           S("pot", 0, None, False, "error"), S("pot", 1, None, False, "timeout"),
                           S("pot", 2, None, False, "forbidden")],
        # 2: CoT majority wrong (2x "31"), PoT majority right (2x "30") -> MD 2-2 tie, PoT first -> right
        ps[2].problem_id: [S("cot", 0, "31", False), S("cot", 1, "31", False), S("cot", 2, "32", False),
                           S("pot", 0, "30", True), S("pot", 1, "30", True), S("pot", 2, "29", False)],
        # 3: CoT right 3x, PoT wrong 2x + crash -> MD 3-2 -> right
        ps[3].problem_id: [S("cot", 0, "40", True), S("cot", 1, "40", True), S("cot", 2, "40", True),
                           S("pot", 0, "41", False), S("pot", 1, "41", False), S("pot", 2, None, False, "error")],
        # 4: no stored paths at all -> wrong everywhere
    }
    return ps, paths


def _mode(paths, mode):
    return {pid: [s for s in ss if s.mode == mode] for pid, ss in paths.items()}


def test_scores_on_the_fixture(fixture):
    ps, paths = fixture
    cot, answers = score(ps, _mode(paths, "cot"), STRICT)
    assert (cot.n, cot.correct, cot.ties, cot.unanswered) == (5, 2, 1, 1)  # problems 0, 3 right; 1 a tie; 4 empty
    assert answers[ps[1].problem_id] == "21" and answers[ps[4].problem_id] is None
    assert (cot.paths, cot.paths_correct, cot.oracle) == (12, 6, 3)
    pot, _ = score(ps, _mode(paths, "pot"), STRICT)
    assert (pot.correct, pot.unanswered, pot.ties, pot.paths_correct, pot.oracle) == (2, 2, 0, 4, 2)
    md, answers = score(ps, paths, STRICT, {"cot": 1, "pot": 1}, ("pot", "cot"))
    assert md.correct == 3 and md.ties == 2  # problems 0, 2 (tie to PoT), 3; problem 1 ties 21-20 -> "21"
    assert (md.paths, md.paths_correct, md.oracle, md.unanswered) == (24, 10, 4, 1)
    assert answers[ps[2].problem_id] == "30" and answers[ps[1].problem_id] == "21"
    assert md.accuracy == pytest.approx(0.6)
    md_cot_first, _ = score(ps, paths, STRICT, {"cot": 1, "pot": 1}, ("cot", "pot"))
    assert md_cot_first.correct == 2  # problem 2's tie now goes to CoT's "31"
    md_pot_heavy, _ = score(ps, paths, STRICT, {"cot": 1, "pot": 2}, ("cot", "pot"))
    assert md_pot_heavy.correct == 2  # problem 3: 3 CoT votes < 2x2 PoT votes for "41"; problem 2: PoT wins anyway


def test_ties_lost_counts_right_answers_the_tie_break_passed_over(fixture):
    ps, paths = fixture
    assert vote([P("cot", 0, "21"), P("cot", 1, "20")]).leaders == ("21", "20")
    cot, _ = score(ps, _mode(paths, "cot"), STRICT)
    assert (cot.ties, cot.ties_lost) == (1, 1)  # problem 1: 21-20, the right 20 came second
    md, _ = score(ps, paths, STRICT, {"cot": 1, "pot": 1}, ("pot", "cot"))
    assert (md.ties, md.ties_lost) == (2, 1)  # problem 2's tie went to PoT's right 30; problem 1's is lost
    md_cot_first, _ = score(ps, paths, STRICT, {"cot": 1, "pot": 1}, ("cot", "pot"))
    assert (md_cot_first.ties, md_cot_first.ties_lost) == (2, 2)  # now problem 2's tie goes to CoT's wrong 31
    assert md_cot_first.summary()["ties_lost"] == 2
