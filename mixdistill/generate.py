"""The generation engine: recipe -> problems -> requests -> teachers -> `generations`, cached and resumable.

Every request has a content-addressed `request_key` (DESIGN.md); a key already stored with status `ok` is never sent
again, so a re-run costs nothing and a killed build resumes where it stopped. Each answer is appended to the run's
journal (`mixdistill.journal`) the moment it arrives and written to the registry in small Arrow batches a fraction of
a second later, each batch one committed INSERT; the next run replays a journal a killed run left, so a SIGKILL loses
only the requests in flight. Everything is validated (recipe, prompts, keys, replay files) before the registry is
touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mixdistill import settings
from mixdistill.ids import canonical_json
from mixdistill.journal import Journal, Segment, journal_dir, replay
from mixdistill.progress import Progress
from mixdistill.prompts import Prompt, load_prompt, prompt_task
from mixdistill.recipe import BuildRecipe, TaskRef
from mixdistill.registry import Registry
from mixdistill.registry.runs import describe_error, finish_run, start_run
from mixdistill.registry.problems import save_problems
from mixdistill.shard import Shard
from mixdistill.stopping import run_stoppable
from mixdistill.tasks import TASKS, Problem, problem_chunks
from mixdistill.teachers import Teacher, TeacherError, TeacherRequest, TeacherResult, make_teacher
from mixdistill.teachers.base import request_keyer
from mixdistill.teachers.openai_api import BATCH_MAX_REQUESTS
from mixdistill.workspace import IDS_MEMORY, Workspace, registered

FLUSH_ROWS = 256
FLUSH_EVERY_S = 0.5
# Built with polars (not pyarrow from Python lists, whose first call imports pandas: half a second mid-build).
GENERATION_SCHEMA = {
    "request_key": pl.String, "teacher_id": pl.String, "prompt_id": pl.String, "problem_id": pl.String,
    "mode": pl.String, "sample_index": pl.Int32, "params": pl.String, "status": pl.String,
    "response_text": pl.String, "finish_reason": pl.String, "error": pl.String, "prompt_tokens": pl.Int32,
    "completion_tokens": pl.Int32, "cost_usd": pl.Float64, "latency_s": pl.Float64, "batch_id": pl.String,
    "run_id": pl.String, "reasoning_text": pl.String, "reasoning_tokens": pl.Int32, "task": pl.String,
}


@dataclass
class TeacherTally:
    name: str = ""
    requests: int = 0
    cached: int = 0
    ok: int = 0
    errors: int = 0
    missing: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    unmatched: int = 0  # replay: recorded questions that match no requested problem
    unmatched_examples: list[str] = field(default_factory=list)
    replay: bool = False  # a replay teacher's answers are read from recordings, never sent


@dataclass
class GenerationReport:
    """What one `run_generation` did. The totals are sums over the per-teacher tallies, which are the only counters;
    `sent` counts requests answered by a model this run (ok + errors); `replayed`, answers read from recordings."""

    run_id: str
    total: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None
    by_teacher: dict[str, TeacherTally] = field(default_factory=dict)

    def _sum(self, name: str):
        return sum(getattr(t, name) for t in self.by_teacher.values())

    cached = property(lambda self: self._sum("cached"))
    ok = property(lambda self: self._sum("ok"))
    errors = property(lambda self: self._sum("errors"))
    missing = property(lambda self: self._sum("missing"))
    cost_usd = property(lambda self: self._sum("cost_usd"))
    tokens = property(lambda self: self._sum("tokens"))

    @property
    def answered(self) -> int:
        """Answers stored this run, sent or replayed."""
        return self.ok + self.errors

    @property
    def replayed(self) -> int:
        return sum(t.ok + t.errors for t in self.by_teacher.values() if t.replay)

    @property
    def sent(self) -> int:
        return self.answered - self.replayed

    @property
    def cost(self) -> float:
        """USD spent by this run (answers already stored cost nothing again)."""
        return self.cost_usd


@dataclass
class Source:
    """One task split of the recipe. Its problems are read a chunk at a time whenever the plan is walked; a split
    that fits in one chunk is kept from the first complete walk (the checking pass), so a small build reads its task
    file once."""

    task: str
    split: str
    ref: TaskRef
    answer_type: str
    data_dir: Path
    _kept: list[Problem] | None = field(default=None, init=False, repr=False)

    def chunks(self) -> Iterator[list[Problem]]:
        """The split's problems (the recipe's `limit` applied), `tasks.custom.CHUNK` at a time."""
        if self._kept is not None:
            yield self._kept
            return
        left, first, n = self.ref.limit, None, 0
        for problems in problem_chunks(self.ref.loader, self.ref.split_name, self.data_dir)[1]:
            if left is not None:
                problems, left = problems[:left], left - min(left, len(problems))
            if problems:
                n += 1
                first = problems if n == 1 else None  # a second chunk: nothing is kept
                yield problems
            if left == 0:
                break
        if n == 1:
            self._kept = first


@dataclass
class PlanChunk:
    """A chunk of one split's problems (stored from `position` on) and the requests each teacher asks of them."""

    source: Source
    position: int
    problems: list[Problem]
    requests: dict[str, list[TeacherRequest]]  # teacher_id -> requests


@dataclass
class Plan:
    """Everything a build will do, worked out (and validated) before the registry is written. Problems and requests
    are not held: `chunks()` reads and builds them again a chunk at a time, so the plan of ten million requests is as
    small as the plan of ten."""

    sources: list[Source]
    prompts: dict[tuple[str, str], Prompt]  # (task, mode) -> prompt
    teachers: list[Teacher]
    params: dict[str, dict]  # teacher_id -> the settings its request keys record (`Teacher.request_params`)
    recipe: BuildRecipe
    shard: Shard | None = None  # only this shard's problems are asked (all of them are stored)
    counts: dict[str, int] = field(default_factory=dict)  # teacher_id -> requests, counted while planning

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def requests(self) -> dict[str, list[TeacherRequest]]:
        """Every request at once, for a small plan (tests, `bench teachers`); the engine walks `chunks()`."""
        out: dict[str, list[TeacherRequest]] = {t.teacher_id: [] for t in self.teachers}
        for chunk in self.chunks():
            for tid, reqs in chunk.requests.items():
                out[tid] += reqs
        return out

    def samples(self, teacher: Teacher) -> dict[str, int]:
        """mode -> samples per problem, for the modes `teacher` serves."""
        return {m: self.recipe.samples[m] for m in self.recipe.modes if teacher.serves(m)}

    def problem_chunks(self) -> Iterator[tuple[Source, int, list[Problem], list[Problem]]]:
        """(source, position of the chunk's first problem, the chunk's problems, those of them asked). A problem
        listed through two splits is asked once: the ids of the earlier splits are kept in a small DuckDB workspace
        (only a recipe of several splits has one) and each chunk is looked up there."""
        with contextlib.ExitStack() as stack:
            seen = None
            for n, source in enumerate(self.sources):
                position = 0
                for problems in source.chunks():
                    asked = [p for p in problems if self.shard is None or self.shard.holds(p.problem_id)]
                    if seen is not None and n > 0 and asked:
                        before = seen.found("seen", [p.problem_id for p in asked], f"split < {n}")
                        asked = [p for p in asked if p.problem_id not in before]
                    yield source, position, problems, asked
                    position += len(problems)
                    if n + 1 < len(self.sources):
                        seen = seen or stack.enter_context(Workspace(IDS_MEMORY))
                        seen.append("seen", pl.DataFrame({"id": [p.problem_id for p in problems], "split": n},
                                                         schema={"id": pl.String, "split": pl.Int32}))

    def chunks(self) -> Iterator[PlanChunk]:
        sampling = self.recipe.sampling
        for source, position, problems, asked in self.problem_chunks():
            requests = {}
            for teacher in self.teachers:
                reqs = requests[teacher.teacher_id] = []
                for mode, samples in self.samples(teacher).items():
                    prompt = self.prompts[(source.task, mode)]
                    key = request_keyer(provider=teacher.spec.provider, model=teacher.spec.model,
                                        prompt_id=prompt.prompt_id, mode=mode, sampling=self.params[teacher.teacher_id])
                    reqs += [TeacherRequest(key(p.problem_id, i), p.problem_id, p.question, mode, i, prompt, sampling)
                             for p in asked for i in range(samples)]
            yield PlanChunk(source, position, problems, requests)


# ---------------------------------------------------------------------- planning (no writes)
def _answer_type(ref: TaskRef) -> str:
    return ref.custom.answer_type if ref.custom is not None else TASKS[ref.task].answer_type


def _check_unique_identities(recipe: BuildRecipe) -> None:
    seen: dict[tuple, str] = {}
    for spec in recipe.teachers:
        ident = (spec.provider, spec.model, canonical_json(spec.reasoning.model_dump()) if spec.reasoning else None)
        if ident in seen:
            raise TeacherError(
                f"teachers {seen[ident]!r} and {spec.label!r} share provider and model (and reasoning settings), so "
                "their requests would share cache keys; list the model once"
            )
        seen[ident] = spec.label


def plan_generation(recipe: BuildRecipe, data_dir: Path | None = None, shard: Shard | None = None) -> Plan:
    """The plan, checked: the recipe's teachers, prompts and replay files, and every problem read once (a bad row,
    a repeated id, a replay file of another task raise here, before anything is written), one chunk at a time."""
    data_dir = data_dir or settings.data_dir()
    _check_unique_identities(recipe)
    sources = [Source(ref.name, ref.split_name, ref, _answer_type(ref), data_dir) for ref in recipe.tasks]
    prompts = {
        (s.task, mode): load_prompt(prompt_task(s.task, s.answer_type), mode, recipe.shots)
        for s in sources
        for mode in recipe.modes
    }
    teachers = [make_teacher(spec) for spec in recipe.teachers]
    for teacher in teachers:
        if recipe.budget.max_cost_usd is not None and not teacher.prices.known:
            raise TeacherError(
                f"teacher {teacher.spec.label!r}: no price known for model {teacher.spec.model!r}, so "
                "budget.max_cost_usd cannot be enforced; give the teacher prices: {input_per_mtok, output_per_mtok}"
            )
        if teacher.spec.batch and not teacher.supports_batch:
            raise TeacherError(f"teacher {teacher.spec.label!r}: batch: provider {teacher.provider!r} has no Batch API")
        teacher.check_sampling(recipe.sampling)
        teacher.check()
    params = {t.teacher_id: t.request_params(recipe.sampling) for t in teachers}
    plan = Plan(sources, prompts, teachers, params, recipe, shard, {t.teacher_id: 0 for t in teachers})
    for _, _, _, asked in plan.problem_chunks():  # every problem read and checked; no request is built
        for teacher in teachers:
            samples = plan.samples(teacher)
            plan.counts[teacher.teacher_id] += len(asked) * sum(samples.values())
            teacher.plan_chunk(asked, samples)
    for teacher in teachers:
        teacher.check_coverage()
    return plan


# ---------------------------------------------------------------------- storing
def _store_plan(reg: Registry, plan: Plan, recipe: BuildRecipe, run_id: str) -> None:
    """Prompts, teachers and the run; the problems are stored chunk by chunk (`_store_problems`)."""
    with reg.transaction():
        reg.insert("prompts", [p.to_row() for p in plan.prompts.values()])
        reg.insert(
            "teachers",
            [
                {"teacher_id": t.teacher_id, "name": t.spec.label, "provider": t.spec.provider, "model": t.spec.model,
                 "base_url": t.spec.base_url or (", ".join(t.spec.base_urls) if t.spec.base_urls else None),
                 "settings": canonical_json(t.settings())}
                for t in plan.teachers
            ],
        )
        name = recipe.name if plan.shard is None else f"{recipe.name} shard {plan.shard}"
        start_run(reg, "generate", name, recipe, run_id=run_id)


def _with_keys(reg: Registry, name: str, column: str, values: list[str], sql: str, params: list | None = None):
    """Rows of `sql`, which joins the registered one-column table `name` of `values` (a chunk's keys or ids):
    a chunk is looked up by one join, with nothing held for the whole plan."""
    with reg.lock, registered(reg.con, name, pl.DataFrame({column: values}, schema={column: pl.String})):
        return reg.con.execute(sql, params).fetchall()


def _store_problems(reg: Registry, chunk: PlanChunk) -> None:
    """The chunk's problems and their split positions, unless a re-run finds them stored."""
    ids = [p.problem_id for p in chunk.problems]
    (stored,), = _with_keys(reg, "_chunk_problems", "problem_id", ids,
                            "SELECT count(*) FROM problem_splits JOIN _chunk_problems USING (problem_id)"
                            " WHERE task = ? AND split = ?", [chunk.source.task, chunk.source.split])
    if stored < len(set(ids)):  # none stored (a first run): the memberships are appended without a lookup
        save_problems(reg, chunk.source.task, chunk.source.split, chunk.problems, start=chunk.position,
                      members_new=stored == 0)


def _cached(reg: Registry, keys: list[str]) -> tuple[dict[str, tuple[float, int]], set[str]]:
    """request_key -> (cost, tokens) of those of `keys` already stored `ok`, and the others of `keys` that are stored
    (with an error: asked again, their new answers replace these rows). One join, whatever the registry's size."""
    if not keys:
        return {}, set()
    rows = _with_keys(reg, "_chunk_keys", "request_key", keys,
                      "SELECT request_key, status = 'ok', coalesce(cost_usd, 0), coalesce(prompt_tokens, 0) +"
                      " coalesce(completion_tokens, 0) FROM generations JOIN _chunk_keys USING (request_key)")
    return {k: (c, t) for k, ok, c, t in rows if ok}, {k for k, ok, _, _ in rows if not ok}


def _spent_before(reg: Registry, plan: Plan) -> tuple[float, int]:
    """Cost and tokens of the plan's answers already stored (a budget counts them): a walk over the plan."""
    cost = tokens = 0
    for chunk in plan.chunks():
        for c, t in _cached(reg, [r.request_key for reqs in chunk.requests.values() for r in reqs])[0].values():
            cost, tokens = cost + c, tokens + t
    return cost, tokens


class Asked(NamedTuple):
    """What the `generations` row of a request in flight records besides its answer."""

    teacher_id: str
    prompt_id: str
    problem_id: str
    mode: str
    sample_index: int
    task: str

    @classmethod
    def of(cls, teacher_id: str, r: TeacherRequest, task: str) -> "Asked":
        return cls(teacher_id, r.prompt.prompt_id, r.problem_id, r.mode, r.sample_index, task)


class Sink:
    """Collects results: each call's rows go to the run's journal at once (one write), and to `generations` every
    `FLUSH_EVERY_S` or `FLUSH_ROWS` rows. `meta` holds the requests in flight (request_key -> `Asked`)."""

    def __init__(self, reg: Registry, run_id: str, meta: dict[str, Asked],
                 params_json: dict[str, str], report: GenerationReport, on_result=None, journal: Journal | None = None):
        self.reg, self.run_id, self.meta, self.params_json = reg, run_id, meta, params_json
        self.report, self.on_result, self.journal = report, on_result, journal
        self.buffer: list[dict] = []
        # keys asked again with a row stored (an error), until their answers are committed: a commit that holds one
        # replaces rows, the others append
        self.retried: set[str] = set()
        self.uncommitted = 0  # rows journaled but not yet committed to the registry
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._closing = False

    def add(self, results: list[TeacherResult]) -> None:
        rows = [self._row(r) for r in results]
        if self.journal is not None:
            self.journal.append(rows)  # durable from here on: a kill -9 after this line loses nothing of it
        for r in results:
            tally = self.report.by_teacher[self.meta[r.request_key].teacher_id]
            if r.status == "ok":
                tally.ok += 1
            else:
                tally.errors += 1
            tally.cost_usd += r.cost_usd or 0.0
            tally.tokens += (r.prompt_tokens or 0) + (r.completion_tokens or 0)
        self.buffer.extend(rows)
        self.uncommitted += len(rows)
        if len(self.buffer) >= FLUSH_ROWS:
            self._due.set()
        if self.on_result is not None:
            self.on_result(len(results))

    def _row(self, r: TeacherResult) -> dict:
        a = self.meta[r.request_key]
        return {
            "request_key": r.request_key, "teacher_id": a.teacher_id, "prompt_id": a.prompt_id,
            "problem_id": a.problem_id, "mode": a.mode, "sample_index": a.sample_index,
            "params": self.params_json[a.teacher_id], "status": r.status, "response_text": r.text,
            "finish_reason": r.finish_reason, "error": r.error, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd, "latency_s": r.latency_s,
            "batch_id": r.batch_id, "run_id": self.run_id, "reasoning_text": r.reasoning_text,
            "reasoning_tokens": r.reasoning_tokens, "task": a.task,
        }

    def _commit(self, rows: list[dict], segment: Segment | None = None) -> None:
        if segment is not None:
            segment.sync()  # the batch is on disk before the registry says it is stored
        df = pl.DataFrame(rows, schema=GENERATION_SCHEMA)
        # Only keys not stored `ok` are ever sent, and `_pending` found which of them are stored at all: a commit
        # appends its rows (no lookup of the stored keys, which costs a scan of them), unless it holds a key asked
        # again, whose earlier error row it replaces.
        again = {r["request_key"] for r in rows} & self.retried if self.retried else set()
        self.reg.insert("generations", df, on_conflict="replace" if again else "new")
        self.retried -= again  # their rows are the new ones now
        self.uncommitted -= len(rows)
        if segment is not None:
            segment.remove()

    async def flush(self) -> None:
        rows, self.buffer = self.buffer, []
        if rows:  # the journal's current segment holds exactly these rows: `add` writes both, with no await between
            await self.db(self._commit, rows, self.journal.rotate() if self.journal is not None else None)

    async def db(self, fn, *args, **kwargs):
        """Run one registry call in a thread; one at a time (a DuckDB connection is not for concurrent use)."""
        async with self._lock:
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await work  # a write cannot stop half-way: let it finish so that no two writes ever overlap
                raise

    async def run(self) -> None:
        """Flush every FLUSH_EVERY_S (or sooner when FLUSH_ROWS are waiting) until `close`."""
        while not self._closing:
            try:
                await asyncio.wait_for(self._due.wait(), FLUSH_EVERY_S)
            except asyncio.TimeoutError:
                pass
            self._due.clear()
            await self.flush()

    def close(self) -> None:
        self._closing = True
        self._due.set()


class Budget:
    """The build's spend so far (stored answers of this recipe included) against its limits."""

    def __init__(self, recipe: BuildRecipe, report: GenerationReport, cost_before: float, tokens_before: int):
        self.limits, self.report = recipe.budget, report
        self.cost_before, self.tokens_before = cost_before, tokens_before

    def reached(self) -> str | None:
        if self.limits.max_cost_usd is None and self.limits.max_tokens is None:
            return None  # asked before every call: no sums over the tallies when there is no limit
        cost = self.cost_before + self.report.cost_usd
        tokens = self.tokens_before + self.report.tokens
        if self.limits.max_cost_usd is not None and cost >= self.limits.max_cost_usd:
            return f"budget reached: ${cost:.4f} spent of max_cost_usd {self.limits.max_cost_usd}"
        if self.limits.max_tokens is not None and tokens >= self.limits.max_tokens:
            return f"budget reached: {tokens} tokens of max_tokens {self.limits.max_tokens}"
        return None


# ---------------------------------------------------------------------- running
async def _worker(teacher: Teacher, queue: deque, sink: Sink, budget: Budget, report: GenerationReport) -> None:
    while queue:
        if (why := budget.reached()) is not None:
            report.stopped = why
            return
        chunk = queue.popleft()
        sink.add(await teacher.complete(chunk))


def _identities(part: list[tuple[TeacherRequest, str]]) -> pl.DataFrame:
    """(request, task) pairs -> the `batch_requests` columns but `batch_id`."""
    return pl.DataFrame(
        {"request_key": [r.request_key for r, _ in part], "problem_id": [r.problem_id for r, _ in part],
         "mode": [r.mode for r, _ in part], "sample_index": [r.sample_index for r, _ in part],
         "prompt_id": [r.prompt.prompt_id for r, _ in part], "task": [t for _, t in part]},
        schema={"request_key": pl.String, "problem_id": pl.String, "mode": pl.String, "sample_index": pl.Int32,
                "prompt_id": pl.String, "task": pl.String})


def _store_batch(reg: Registry, batch_id: str, teacher: Teacher, run_id: str,
                 part: list[tuple[TeacherRequest, str]]) -> None:
    """A submitted batch and its requests, in one commit: a restart finds both or neither."""
    with reg.transaction():
        reg.insert("batches", [{"batch_id": batch_id, "teacher_id": teacher.teacher_id, "provider": teacher.provider,
                                "status": "submitted", "run_id": run_id}])
        reg.insert("batch_requests", _identities(part).with_columns(batch_id=pl.lit(batch_id)), on_conflict="new")


def _in_batches(reg: Registry, teacher_id: str, part: list[tuple[TeacherRequest, str]]) -> dict[str, str]:
    """request_key -> batch_id, for those of the requests already in a pending batch of the teacher (submitted by an
    earlier run). A request moved by migration m010 from a JSON list gets its identity here, so that its batch can be
    ingested."""
    pending = "SELECT batch_id FROM batches WHERE teacher_id = $teacher AND status = 'submitted'"
    with reg.lock, registered(reg.con, "_chunk_asked", _identities(part)):
        rows = reg.con.execute(
            f"SELECT r.request_key, r.batch_id, r.problem_id IS NULL FROM batch_requests r"
            f" JOIN _chunk_asked c USING (request_key) WHERE r.batch_id IN ({pending})", {"teacher": teacher_id}
        ).fetchall()
        if any(unknown for _, _, unknown in rows):
            reg.con.execute(
                f"UPDATE batch_requests r SET problem_id = c.problem_id, mode = c.mode, sample_index ="
                f" c.sample_index, prompt_id = c.prompt_id, task = c.task FROM _chunk_asked c"
                f" WHERE r.request_key = c.request_key AND r.problem_id IS NULL AND r.batch_id IN ({pending})",
                {"teacher": teacher_id}).fetchall()
    return {key: batch_id for key, batch_id, _ in rows}


def _batch_asked(reg: Registry, batch_id: str) -> dict[str, Asked]:
    """The requests of a batch whose identity is known (all but those of another recipe's JSON list)."""
    with reg.lock:
        rows = reg.con.execute(
            "SELECT r.request_key, b.teacher_id, r.prompt_id, r.problem_id, r.mode, r.sample_index, r.task"
            " FROM batch_requests r JOIN batches b USING (batch_id) WHERE r.batch_id = ? AND r.problem_id IS NOT NULL",
            [batch_id]).fetchall()
    return {key: Asked(*rest) for key, *rest in rows}


def _set_batch_status(reg: Registry, batch_id: str, status: str) -> None:
    reg.con.execute(
        "UPDATE batches SET status = ?, updated_at = current_timestamp WHERE batch_id = ?", [status, batch_id]
    ).fetchall()


class Batches:
    """A Batch API teacher's share of the build. Its requests are submitted `BATCH_MAX_REQUESTS` at a time while the
    plan is walked, each batch stored with its requests (`batch_requests`), so that memory holds one batch's
    requests whatever the plan's size; requests already in a pending batch of an earlier run are not sent again.
    Once the plan is walked, every batch holding requests of the plan is polled, and each one that ends is ingested
    from its stored requests (a batch of another recipe is left for that recipe's re-run to collect)."""

    def __init__(self, teacher: Teacher, reg: Registry, sink: Sink, budget: Budget, report: GenerationReport,
                 run_id: str):
        self.teacher, self.reg, self.sink, self.budget, self.report, self.run_id = teacher, reg, sink, budget, report, run_id
        self.todo: list[tuple[TeacherRequest, str]] = []  # (request, task), fewer than BATCH_MAX_REQUESTS
        self.in_flight: dict[str, None] = {}  # batch ids, in the order they were submitted
        self.earlier: bool | None = None  # whether an earlier run left batches of this teacher pending

    async def add(self, requests: list[TeacherRequest], task: str) -> None:
        """A chunk's requests not stored `ok`; a full batch of them is submitted at once."""
        part = [(r, task) for r in requests]
        if self.earlier is None:
            self.earlier = bool(await self.sink.db(
                self.reg.scalar, "SELECT count(*) FROM batches WHERE teacher_id = ? AND status = 'submitted'",
                [self.teacher.teacher_id]))
        if self.earlier and part:
            covered = await self.sink.db(_in_batches, self.reg, self.teacher.teacher_id, part)
            self.in_flight.update(dict.fromkeys(covered.values()))
            part = [(r, t) for r, t in part if r.request_key not in covered]
        self.todo += part
        while len(self.todo) >= BATCH_MAX_REQUESTS and not self.report.stopped:
            await self._submit(self.todo[:BATCH_MAX_REQUESTS])
            del self.todo[:BATCH_MAX_REQUESTS]

    async def _submit(self, part: list[tuple[TeacherRequest, str]]) -> None:
        if (why := self.budget.reached()) is not None:
            self.report.stopped = why
            return
        batch_id = await self.teacher.with_retries(self.teacher.submit_batch, [r for r, _ in part])
        await self.sink.db(_store_batch, self.reg, batch_id, self.teacher, self.run_id, part)  # a restart picks it up
        self.in_flight[batch_id] = None

    async def finish(self) -> None:
        """Submit the last partial batch, then poll until every batch of the plan has ended and been ingested."""
        if self.todo:
            await self._submit(self.todo)
            self.todo = []
        while self.in_flight:
            for batch_id in list(self.in_flight):
                status = await self.teacher.with_retries(self.teacher.poll_batch, batch_id)
                if status.state == "ended":
                    await self._ingest(batch_id, status.detail)
                    del self.in_flight[batch_id]
            if self.in_flight:
                await asyncio.sleep(self.teacher.spec.batch_poll_s)

    async def _ingest(self, batch_id: str, detail: str) -> None:
        asked = await self.sink.db(_batch_asked, self.reg, batch_id)
        stored, errors = await self.sink.db(_cached, self.reg, list(asked))  # answered meanwhile, or asked again
        keys = {k for k in asked if k not in stored}
        self.sink.meta.update((k, asked[k]) for k in keys)
        self.sink.retried |= errors & keys
        self.sink.add(await self.teacher.with_retries(self.teacher.fetch_batch, batch_id, keys))
        await self.sink.flush()
        state = "ingested" if detail in ("completed", "ended") else f"ingested-{detail}"
        await self.sink.db(_set_batch_status, self.reg, batch_id, state)
        for key in keys:
            self.sink.meta.pop(key, None)


def _pending(reg: Registry, plan: Plan, chunk: PlanChunk, report: GenerationReport
             ) -> tuple[dict[str, list[TeacherRequest]], set[str]]:
    """Per teacher, its requests of the chunk not stored `ok` that it can answer (counted in the report as cached
    and missing otherwise); and the chunk's keys stored with an error (asked again, their answers replace them)."""
    cached, retried = _cached(reg, [r.request_key for reqs in chunk.requests.values() for r in reqs])
    pending = {}
    for teacher in plan.teachers:
        tally = report.by_teacher[teacher.teacher_id]
        reqs = [r for r in chunk.requests[teacher.teacher_id] if r.request_key not in cached]
        tally.cached += len(chunk.requests[teacher.teacher_id]) - len(reqs)
        todo = teacher.answerable(reqs) if reqs else []
        tally.missing += len(reqs) - len(todo)
        pending[teacher.teacher_id] = todo
    return pending, retried


async def _wait(jobs: list[asyncio.Task]) -> None:
    try:
        if jobs:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            for job in done:
                if job.exception() is not None:
                    raise job.exception()
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def _execute(reg: Registry, plan: Plan, sink: Sink, budget: Budget, report: GenerationReport, run_id: str,
                   on_planned=None) -> None:
    """Chunk after chunk of the plan: drop what is stored, send the rest while the chunk's problems are stored (a
    chunk's requests finish before the next chunk is read, so memory holds one chunk). Batch API teachers submit
    their requests a batch at a time along the way (`Batches`) and collect the batches once the plan is walked."""
    batches = {t.teacher_id: Batches(t, reg, sink, budget, report, run_id)
               for t in plan.teachers if t.spec.batch and t.supports_batch}
    writer = asyncio.create_task(sink.run())
    try:
        for chunk in plan.chunks():
            if report.stopped:  # the budget is spent: the other problems are still stored, nothing more is asked
                await sink.db(_store_problems, reg, chunk)
                continue
            pending, retried = await sink.db(_pending, reg, plan, chunk, report)
            if on_planned is not None:
                on_planned(sum(len(v) for v in chunk.requests.values()) - sum(len(v) for v in pending.values()))
            # the chunk's problems are stored while its requests go out (queued before any of their commits)
            jobs = [asyncio.ensure_future(sink.db(_store_problems, reg, chunk))]
            for teacher in plan.teachers:
                reqs = pending[teacher.teacher_id]
                if teacher.teacher_id in batches:
                    jobs.append(asyncio.ensure_future(batches[teacher.teacher_id].add(reqs, chunk.source.task)))
                elif reqs:
                    sink.meta.update((r.request_key, Asked.of(teacher.teacher_id, r, chunk.source.task)) for r in reqs)
                    sink.retried.update(r.request_key for r in reqs if r.request_key in retried)
                    queue = deque(teacher.chunks(reqs))
                    jobs += [asyncio.create_task(_worker(teacher, queue, sink, budget, report))
                             for _ in range(min(teacher.workers, len(queue)))]
            await _wait(jobs)
            for teacher in plan.teachers:
                if teacher.teacher_id not in batches:  # every answer of the chunk has made its row
                    for r in pending[teacher.teacher_id]:
                        sink.meta.pop(r.request_key, None)
        if not report.stopped:
            await _wait([asyncio.create_task(b.finish()) for b in batches.values()])
    finally:
        sink.close()
        await asyncio.gather(writer, return_exceptions=True)  # lets a write in progress finish, never cuts it
        await sink.flush()
        if not writer.cancelled() and writer.exception() is not None:
            raise writer.exception()  # a commit that failed is an error (its rows stay in the journal), not a silence
        for teacher in plan.teachers:
            await teacher.aclose()


def preload(plan: Plan) -> None:
    """Import in a thread what the first request needs (the event loop, and aiohttp for HTTP teachers), for a caller
    about to open the registry: DuckDB releases the GIL while it works, so the imports (0.1 s) overlap it instead of
    delaying the first request."""

    def imports() -> None:
        try:
            with contextlib.suppress(ImportError):
                import uvloop  # noqa: F401
            if any(t.uses_http for t in plan.teachers):
                import aiohttp  # noqa: F401
        finally:
            sys.setswitchinterval(interval)

    # Each DuckDB call ends by taking the GIL back, which the importing thread would hold for up to the switch
    # interval (5 ms): a new registry's ~25 calls took 0.25 s longer. A short interval while the imports run.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    threading.Thread(target=imports, name="mixdistill-preload", daemon=True).start()


def _run(coro):
    """uvloop when available (it roughly halves the event loop's cost per request), asyncio otherwise; a Ctrl-C or
    SIGTERM cancels the run at an `await` (`stopping.run_stoppable`), so its cleanup commits every received answer."""
    try:
        import uvloop
    except ImportError:
        return run_stoppable(coro)
    return run_stoppable(coro, uvloop.run)


def _progress_bar(total: int, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7.1f} answers/s"),
        TextColumn("[red]{task.fields[errors]} errors"),
        TextColumn("${task.fields[spend]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def run_generation(reg: Registry, recipe: BuildRecipe, progress: bool = True, *, data_dir: Path | None = None,
                   plan: Plan | None = None) -> GenerationReport:
    """Generate every request of `recipe` not already stored `ok`; returns counts of cached, sent, ok, errors, cost."""
    started = time.perf_counter()
    plan = plan or plan_generation(recipe, data_dir)
    run_id = uuid.uuid4().hex[:16]
    report = GenerationReport(run_id=run_id, total=plan.total)
    replay(reg, GENERATION_SCHEMA)  # answers a killed run received but never committed: stored, not asked again
    _store_plan(reg, plan, recipe, run_id)
    for teacher in plan.teachers:
        tally = report.by_teacher.setdefault(
            teacher.teacher_id, TeacherTally(name=teacher.spec.label, replay=teacher.provider == "replay"))
        tally.requests = plan.counts[teacher.teacher_id]
        tally.unmatched, tally.unmatched_examples = getattr(teacher, "unmatched", (0, []))
    limited = recipe.budget.max_cost_usd is not None or recipe.budget.max_tokens is not None
    budget = Budget(recipe, report, *(_spent_before(reg, plan) if limited else (0.0, 0)))

    with _progress_bar(plan.total, progress) as bar:
        task = bar.add_task("generate", total=plan.total, rate=0.0, errors=0, spend=0.0)
        t0 = time.perf_counter()
        left = [plan.total]  # requests that may still be sent: the bar's total shrinks as chunks are found stored

        def on_result(n: int) -> None:
            bar.update(task, advance=n, rate=report.answered / max(time.perf_counter() - t0, 1e-9),
                       errors=report.errors, spend=report.cost_usd)

        def on_planned(skipped: int) -> None:
            left[0] -= skipped
            bar.update(task, total=left[0])

        params_json = {tid: canonical_json(p) for tid, p in plan.params.items()}
        journal = Journal(journal_dir(reg), run_id)
        sink = Sink(reg, run_id, {}, params_json, report, on_result if progress else None, journal)
        thawed = gc.get_freeze_count() == 0  # a caller's own frozen objects are left frozen
        gc.freeze()  # the libraries and the caller's objects live on: full collections skip them
        try:
            _run(_execute(reg, plan, sink, budget, report, run_id, on_planned if progress else None))
        except BaseException as e:
            finish_run(reg, run_id, "failed", describe_error(e))
            raise
        finally:
            if thawed:
                gc.unfreeze()
            journal.close(remove=sink.uncommitted == 0)  # kept (and replayed next run) if a commit failed
    finish_run(reg, run_id, "stopped" if report.stopped else "done", report.stopped)
    report.elapsed_s = time.perf_counter() - started
    return report
