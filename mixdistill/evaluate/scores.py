"""Accuracy from judged paths: the vote within each mode and the pooled MD vote, per problem and in total (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from mixdistill.evaluate.paths import judge_answer
from mixdistill.evaluate.vote import DEFAULT_ORDER, PathAnswer, vote
from mixdistill.tasks import Problem
from mixdistill.verify.rules import Rule


@dataclass(frozen=True)
class StoredPath:
    """One path as `eval_samples` keeps it."""

    mode: str
    sample_index: int
    extracted: str | None
    correct: bool
    status: str

    def as_answer(self) -> PathAnswer:
        votes = self.status in ("correct", "wrong-answer")
        return PathAnswer(self.mode, self.sample_index, self.extracted if votes else None)


@dataclass
class Score:
    n: int = 0  # problems
    correct: int = 0  # problems whose voted answer is right
    paths: int = 0
    paths_correct: int = 0  # single paths that are right (mean path accuracy = paths_correct / paths)
    oracle: int = 0  # problems with at least one right path (pass@k)
    unanswered: int = 0  # problems where no path gave an answer
    ties: int = 0  # problems whose vote the tie-break decided
    ties_lost: int = 0  # of those, problems where a tied answer was right and the tie-break chose a wrong one

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def summary(self) -> dict:
        out = asdict(self)
        out["accuracy"] = self.accuracy
        out["path_accuracy"] = self.paths_correct / self.paths if self.paths else None
        out["oracle_accuracy"] = self.oracle / self.n if self.n else None
        return out


def score(
    problems: Sequence[Problem],
    paths: Mapping[str, Sequence[StoredPath]],
    rule: Rule,
    weights: Mapping[str, float] | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
) -> tuple[Score, dict[str, str | None]]:
    """Vote over each problem's paths (one mode's, or both modes' for MD) and judge the winner.

    Returns the totals and each problem's voted answer. A problem without paths counts as wrong.
    """
    total, answers = Score(), {}
    for p in problems:
        mine = paths.get(p.problem_id, ())
        v = vote([s.as_answer() for s in mine], weights, order)
        answers[p.problem_id] = v.answer
        total.n += 1
        right = v.answer is not None and judge_answer(rule, p, v.answer)
        total.correct += right
        total.ties_lost += v.tied and not right and any(judge_answer(rule, p, a) for a in v.leaders[1:])
        total.paths += len(mine)
        total.paths_correct += sum(s.correct for s in mine)
        total.oracle += any(s.correct for s in mine)
        total.unanswered += v.answer is None
        total.ties += v.tied
    return total, answers
