"""Verify stored generations: PoT through the sandbox (`executions`), CoT through answer extraction, then a verdict
per generation under a named rule (`verdicts`). Never calls a teacher.

A generation is pending when it has no verdict from the rule's current version, or (PoT) when its program has not
run under the current sandbox version: then it runs again and its verdict is replaced. Executions are keyed by
sandbox version, so a new rule version re-judges stored executions without re-running them.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from mixdistill.registry import Registry
from mixdistill.registry.runs import describe_error, finish_run, start_run
from mixdistill.shard import Shard
from mixdistill.verify.answers import NUMBER_RE, extract_cot_answer, format_number, parse_number
from mixdistill.verify.programs import extract_program
from mixdistill.verify.rules import Rule, get_rule
from mixdistill.verify.sandbox import SANDBOX_VERSION, ExecResult, Sandbox, SandboxLimits

CHUNK = 2000  # generations per transaction: a killed run keeps every finished chunk

_PENDING_SQL = """
SELECT g.request_key, g.problem_id, g.mode, g.response_text, p.answer_type, p.gold_number, p.gold_bool,
       e.status AS exec_status, e.answer AS exec_answer, e.answer_number AS exec_number, e.printed AS exec_printed,
       e.first_answer AS exec_first, e.first_number AS exec_first_number, v.request_key IS NOT NULL AS judged
FROM generations g
LEFT JOIN problems p USING (problem_id)
LEFT JOIN verdicts v ON v.request_key = g.request_key AND v.rule = $rule AND v.rule_version = $version
LEFT JOIN executions e ON e.request_key = g.request_key AND e.sandbox_version = $sandbox
WHERE g.status = 'ok' AND (v.request_key IS NULL OR (g.mode = 'pot' AND e.request_key IS NULL)) {shard}
"""
# Shard I/N in SQL, the same partition as `mixdistill.shard.shard_of` (the first 8 bytes of the id's SHA-256, mod N).
_SHARD_SQL = "AND ('0x' || substr(sha256(g.problem_id), 1, 16))::UBIGINT % $shards = $shard_index"


@dataclass
class VerifySummary:
    rule: str
    rule_version: str
    pending: int = 0
    verified: int = 0
    correct: int = 0
    executed: int = 0  # programs run now
    reused_executions: int = 0  # stored executions judged again (a new rule version)
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.verified if self.verified else None


@dataclass(frozen=True)
class Judgement:
    extracted: str | None
    correct: bool
    reason: str


def judge(rule: Rule, answer_type: str | None, gold_number, gold_bool, pred) -> Judgement:
    """Compare one prediction with gold. `pred` is a float, text, or None (nothing extracted)."""
    extracted = format_number(pred) if type(pred) is float and math.isfinite(pred) else (
        None if pred is None else str(pred)
    )
    gold = gold_bool if answer_type == "bool" else gold_number
    if gold is None:
        return Judgement(extracted, False, "gold-missing")
    if pred is None:
        return Judgement(extracted, False, "no-answer")
    if type(pred) is float and not math.isfinite(pred):
        return Judgement(extracted, False, "non-finite")
    ok = rule.equal(pred, gold)
    return Judgement(extracted, ok, "correct" if ok else "wrong-answer")


def apply_conventions(rule: Rule, answer_type, status, answer, answer_number, printed=None, first_answer=None,
                      first_number=None) -> tuple[str, str | None, float | None]:
    """(status, answer, number) after the rule's opt-in PoT conventions: `first-of-tuple` takes a tuple answer's
    first element; `printed` takes the last line printed by a program that set no answer, when that line is one
    number (or, on a yes/no task, one yes/no word)."""
    conventions = getattr(rule, "pot_conventions", ())
    if "first-of-tuple" in conventions and status == "ok" and first_answer is not None:
        return status, first_answer, first_number
    if "printed" in conventions and status == "no-answer" and printed:
        line = printed.strip().rstrip(".").strip()
        if answer_type == "bool":
            if line.lower() in ("yes", "no", "true", "false"):
                return "ok", line, None
        elif (m := NUMBER_RE.fullmatch(line.replace("\u2212", "-"))) and any(ch.isdigit() for ch in m.group(0)):
            number = parse_number(line)
            if number is not None:
                return "ok", line, number
    return status, answer, answer_number


def judge_execution(rule: Rule, answer_type, gold_number, gold_bool, status, answer, answer_number, printed=None,
                    first_answer=None, first_number=None) -> Judgement:
    """A verdict from a program's execution: failures keep their status as the reason; a numeric task needs a
    numeric answer (a list or a string is wrong even if it contains the number)."""
    status, answer, answer_number = apply_conventions(rule, answer_type, status, answer, answer_number, printed,
                                                      first_answer, first_number)
    if status != "ok":
        return Judgement(answer, False, status)
    if answer_type == "bool":
        return judge(rule, answer_type, gold_number, gold_bool, answer)
    if answer_number is None:
        j = judge(rule, answer_type, gold_number, gold_bool, None)
        return Judgement(answer, False, j.reason if j.reason == "gold-missing" else "non-numeric")
    return judge(rule, answer_type, gold_number, gold_bool, float(answer_number))


def verify_pending(
    reg: Registry,
    rule: str = "strict",
    progress: bool = True,
    *,
    sandbox: Sandbox | None = None,
    limits: SandboxLimits | None = None,
    cot_reading: str = "stated",
    pot_conventions: tuple[str, ...] = (),
    shard: Shard | None = None,
) -> VerifySummary:
    """Verify every generation without a verdict from `rule`'s current version (which names the CoT reading);
    returns counts by reason."""
    the_rule = get_rule(rule, cot_reading, pot_conventions)
    started = time.perf_counter()
    summary = VerifySummary(the_rule.name, the_rule.version)
    params = {"rule": the_rule.name, "version": the_rule.version, "sandbox": SANDBOX_VERSION}
    if shard is not None:
        params |= {"shards": shard.count, "shard_index": shard.index}
    sql = _PENDING_SQL.format(shard=_SHARD_SQL if shard is not None else "")
    total = reg.scalar(f"SELECT count(*) FROM ({sql})", params)
    if not total:
        return summary
    # Rows this run adds supersede stored ones only where another rule version or sandbox version was stored before:
    # only then does each chunk's insert refresh the `latest` flags of its generations (a scan of the table).
    supersedes = (
        reg.scalar("SELECT EXISTS (SELECT 1 FROM verdicts WHERE rule = ? AND rule_version <> ?)",
                   [the_rule.name, the_rule.version]),
        reg.scalar("SELECT EXISTS (SELECT 1 FROM executions WHERE sandbox_version <> ?)", [SANDBOX_VERSION]),
    )
    sb, own = sandbox, False
    run_id = start_run(reg, "verify", f"verify {the_rule.name}")
    bar = _progress(total, the_rule.name) if progress else None
    try:
        for chunk in _pending_chunks(reg, sql, params):
            if sb is None and chunk.filter((pl.col("mode") == "pot") & pl.col("exec_status").is_null()).height:
                sb, own = Sandbox(limits=limits).__enter__(), True  # only a run with programs to run starts one
            summary.pending += chunk.height
            _verify_chunk(reg, the_rule, chunk, sb, summary, supersedes)
            if bar is not None:
                bar.advance(bar.task_ids[0], chunk.height)
    except BaseException as e:
        finish_run(reg, run_id, "failed", describe_error(e))
        raise
    finally:
        if bar is not None:
            bar.stop()
        if own:
            sb.close()
    finish_run(reg, run_id)
    summary.seconds = time.perf_counter() - started
    return summary


def _pending_chunks(reg: Registry, sql: str, params: dict):
    """The pending generations in frames of CHUNK rows, streamed by a cursor of their own (a second connection to the
    same database, reading the snapshot taken when the query started) while verdicts are written through `reg`: no
    more than one chunk is ever held in Python, whatever the size of the registry."""
    cursor = reg.con.cursor()
    try:
        held, rows = [], 0
        for batch in cursor.sql(sql, params=params).to_arrow_reader(CHUNK):
            held.append(batch)
            rows += batch.num_rows
            if rows >= CHUNK:  # DuckDB's batches run short at its own boundaries: chunks of CHUNK or a little more
                yield pl.from_arrow(pa.Table.from_batches(held))
                held, rows = [], 0
        if rows:
            yield pl.from_arrow(pa.Table.from_batches(held))
    finally:
        cursor.close()


def _progress(total: int, rule: str):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from mixdistill.progress import Progress

    bar = Progress(TextColumn(f"verify ({rule})"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.add_task("verify", total=total)
    bar.start()
    return bar


def _verify_chunk(reg: Registry, rule: Rule, rows: pl.DataFrame, sb: Sandbox | None, summary,
                  supersedes: tuple[bool, bool]) -> None:
    records = rows.to_dicts()
    to_run = [r for r in records if r["mode"] == "pot" and r["exec_status"] is None]
    programs = [extract_program(r["response_text"]) for r in to_run]
    runnable = [p for p in programs if p is not None]
    results = iter(sb.run_many(runnable) if runnable else [])
    executions = []
    for r, program in zip(to_run, programs):
        res = next(results) if program is not None else ExecResult(
            "no-answer", error_class="NoProgram", error_message="no Python program found in the response"
        )
        executions.append({"request_key": r["request_key"], "sandbox_version": SANDBOX_VERSION, "program": program,
                           **res.to_row()})
        r.update(exec_status=res.status, exec_answer=res.answer, exec_number=res.answer_number,
                 exec_printed=res.printed, exec_first=res.first_answer, exec_first_number=res.first_number)
    summary.executed += len(runnable)
    summary.reused_executions += sum(1 for r in records if r["mode"] == "pot") - len(to_run)

    verdicts = []
    for r in records:
        if r["mode"] == "pot":
            j = judge_execution(rule, r["answer_type"], r["gold_number"], r["gold_bool"], r["exec_status"],
                                r["exec_answer"], r["exec_number"], r["exec_printed"], r["exec_first"],
                                r["exec_first_number"])
        else:
            text = extract_cot_answer(r["response_text"], r["answer_type"] or "number", rule.cot_reading)
            j = judge(rule, r["answer_type"], r["gold_number"], r["gold_bool"], text)
        verdicts.append({"request_key": r["request_key"], "rule": rule.name, "rule_version": rule.version,
                         "extracted": j.extracted, "correct": j.correct, "reason": j.reason})
        summary.reasons[j.reason] += 1
        summary.correct += j.correct
    # Pending means no execution of this sandbox version (so each is new) and, but for a program run again under a
    # new sandbox version, no verdict of this rule version: those rows are appended without looking their keys up
    # (a scan of the table per chunk), and only the verdicts that exist are replaced.
    judged = {r["request_key"] for r in records if r["judged"]}
    with reg.transaction():
        if executions:
            reg.insert("executions", pl.DataFrame(executions, schema=_EXEC_SCHEMA), on_conflict="new",
                       supersedes=supersedes[1])
        for again in (False, True):
            rows = [v for v in verdicts if (v["request_key"] in judged) == again]
            if rows:
                reg.insert("verdicts", pl.DataFrame(rows, schema=_VERDICT_SCHEMA),
                           on_conflict="replace" if again else "new", supersedes=supersedes[0])
    summary.verified += len(verdicts)


_EXEC_SCHEMA = {
    "request_key": pl.String, "sandbox_version": pl.String, "status": pl.String, "answer": pl.String,
    "answer_number": pl.Float64, "stdout_head": pl.String, "error_class": pl.String, "error_message": pl.String,
    "runtime_s": pl.Float64, "printed": pl.String, "first_answer": pl.String, "first_number": pl.Float64,
    "program": pl.String,
}
_VERDICT_SCHEMA = {
    "request_key": pl.String, "rule": pl.String, "rule_version": pl.String, "extracted": pl.String,
    "correct": pl.Boolean, "reason": pl.String,
}
