"""Mixing: verified rationales -> the rows of a corpus, in SQL on a private DuckDB workspace (`mixdistill.workspace`).

The steps, in order, each one a small function:
1. keep only rationales judged correct, outside any excluded (evaluation) problem  -> contamination guard;
   drop rationales over `max_rationale_tokens` (the rationale itself is made in `compose_rationale`: the final
   answer, or with `rationale: trace-and-answer` a reasoning teacher's trace before it)
2. drop exact and normalised duplicates within (problem, mode)
3. rank deterministically (hash of seed + request_key) and keep up to k per (problem, mode)
4. balance: where a problem has both modes, keep the same number of each (the paper's "well-balanced mixed thought
   data"); with `require_agreement`, drop problems that lack a correct rationale in either mode
5. per-teacher quotas (max share of rows)
6. train/validation split by problem (hash of seed + problem_id), so a problem never straddles splits
7. the three configs: `cot`, `pot` and `mixed` (their union), with the model input carrying the mode prefix

The policy runs in SQL so that a corpus of 10^7 rationales mixes within DuckDB's memory limit (spilling beyond it);
the only per-row Python work (`prepare`: token count, normalised form) runs one bounded chunk at a time.
"""

from __future__ import annotations

import ast
import re

import polars as pl

from mixdistill.recipe import MixPolicy
from mixdistill.schema import COLUMNS
from mixdistill import workspace
from mixdistill.workspace import Workspace

MODE_PREFIX = {"cot": "[CoT]", "pot": "[PoT]"}
CANDIDATE_COLUMNS = [
    "request_key", "problem_id", "task", "source_id", "question", "mode", "teacher", "prompt_id",
    "rationale", "answer", "gold", "rule",
]
ROW_COLUMNS = COLUMNS  # the corpus row schema lives in mixdistill.schema


def model_input(mode: str, question: str) -> str:
    """What the student sees: the mode prefix tells it which kind of rationale to write (multi-task training)."""
    return f"{MODE_PREFIX[mode]} {question}"


def normalise_rationale(mode: str, text: str) -> str:
    """A canonical form for near-duplicate detection: programs by their AST (comments and layout drop out),
    prose by lower-cased, whitespace-collapsed text."""
    if mode == "pot":
        try:
            return ast.unparse(ast.parse(text))
        except (SyntaxError, ValueError):
            pass
    return re.sub(r"\s+", " ", text).strip().lower()


_REDACTED = re.compile(r"<redacted_thinking>.*?</redacted_thinking>\s*", re.DOTALL)
_PIECES = r"\w+|[^\w\s]"


def compose_rationale(mode: str, answer: str, trace: str | None, rationale: str = "answer") -> str:
    """The training target from a verified answer and its reasoning trace (None for non-reasoning teachers).

    `trace-and-answer`: CoT gets the trace in `<think>` tags before the answer (the form open reasoning models are
    trained on); PoT gets it as comment lines above the program, so the rationale stays an executable program.
    Redacted-thinking blocks are opaque data, never text, and are left out."""
    trace = _REDACTED.sub("", trace or "").strip()
    if rationale == "answer" or not trace:
        return answer
    if mode == "pot":
        return "\n".join(f"# {line}".rstrip() for line in trace.splitlines()) + "\n" + answer
    return f"<think>\n{trace}\n</think>\n\n{answer}"


def approx_tokens() -> pl.Expr:
    """A tokenizer-free length of the `rationale` column: words, numbers and punctuation marks (close to a BPE
    token count for English prose and Python; the mix runs without the student's tokenizer)."""
    return pl.col("rationale").str.count_matches(_PIECES)


def prepare(chunk: pl.DataFrame) -> pl.DataFrame:
    """The per-row Python work of steps 1-2 on one bounded chunk of candidates: length and normalised form."""
    norm = [normalise_rationale(m, r) for m, r in zip(chunk["mode"], chunk["rationale"])]
    return chunk.with_columns(approx_tokens().alias("_tokens"), pl.Series("_norm", norm, dtype=pl.String))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def stable_hash(salt: str, column: str) -> str:
    """SQL for a 64-bit hash of `salt:value`: the first 16 hex digits of its SHA-256 as UBIGINT. Unlike an engine's
    own hash it never changes between versions, so a rebuild with newer software picks the same rows and the same
    validation problems."""
    return f"('0x' || sha256({_literal(salt + ':')} || {column})[1:16])::UBIGINT"


def split_column(policy: MixPolicy, problem_id: str = "problem_id") -> str:
    """SQL for step 6: validation membership is a pure function of (seed, problem_id), stable when problems are added."""
    threshold = int(policy.validation_fraction * 2**64)
    return (f"CASE WHEN {stable_hash(f'split:{policy.seed}', problem_id)} < {threshold} "
            "THEN 'validation' ELSE 'train' END")


def input_sql() -> str:
    """`model_input` in SQL over the `mode` and `question` columns."""
    prefix = " ".join(f"WHEN {_literal(m)} THEN {_literal(p)}" for m, p in MODE_PREFIX.items())
    return f"(CASE mode {prefix} END || ' ' || question)"


# The one row order of every export (the same selection always gives the same bytes); ties cannot happen for
# distinct problems' ids, the last two keys only make that explicit.
ROW_ORDER = "task NULLS FIRST, source_id NULLS FIRST, mode NULLS FIRST, _i, problem_id, request_key"
CONFIG_FILTER = {"cot": "mode = 'cot'", "pot": "mode = 'pot'", "mixed": "true"}


def select(ws: Workspace, policy: MixPolicy) -> dict:
    """Steps 1-5 on the workspace tables `cand` (prepared candidates) and `excluded` (problem_id): the chosen
    rationales into table `chosen`, the candidates' rule versions into `cand_rules`, and the counts dropped at each
    step (for the card)."""
    count = lambda table, where="true": ws.scalar(f"SELECT count(*) FROM {table} WHERE {where}")  # noqa: E731
    stats: dict[str, int] = {"candidates": count("cand")}
    held_out = "problem_id IN (SELECT problem_id FROM excluded)"
    limit = policy.max_rationale_tokens
    over = "false" if limit is None else f"_tokens > {int(limit)}"
    stats["dropped_contamination"] = count("cand", held_out)
    stats["dropped_over_length"] = count("cand", f"NOT ({held_out}) AND {over}")
    # The windows of steps 2-4 run on narrow keys (rationale and normalised form by their 128-bit MD5): what DuckDB
    # sorts and partitions is a few dozen bytes a row, never the texts; the chosen rows get their texts back by a join.
    ws.execute(f"""CREATE OR REPLACE TABLE _ranked AS
        SELECT request_key, problem_id, mode, md5_number(rationale) AS _exact, md5_number(_norm) AS _near,
               {stable_hash(f'rank:{policy.seed}', 'request_key')} AS _rank
        FROM cand WHERE NOT ({held_out}) AND NOT ({over})""")
    ws.execute("CREATE OR REPLACE TABLE cand_rules AS SELECT DISTINCT rule FROM cand")

    first = "row_number() OVER (PARTITION BY problem_id, mode, {} ORDER BY _rank, request_key) = 1"
    ws.execute(f"CREATE OR REPLACE TABLE _exact AS SELECT * FROM _ranked QUALIFY {first.format('_exact')}")
    stats["dropped_exact_duplicates"] = count("_ranked") - count("_exact")
    ws.execute("DROP TABLE _ranked")  # each step's input is dropped once the next exists: one copy at a time
    ws.execute(f"CREATE OR REPLACE TABLE _distinct AS SELECT *, row_number() OVER (PARTITION BY problem_id, mode "
               f"ORDER BY _rank, request_key) AS _i FROM (SELECT * FROM _exact QUALIFY {first.format('_near')})")
    stats["dropped_normalised_duplicates"] = count("_exact") - count("_distinct")
    ws.execute("DROP TABLE _exact")

    k = int(policy.k_per_mode)
    stats["dropped_over_k"] = count("_distinct", f"_i > {k}")
    ws.execute(f"""CREATE OR REPLACE TABLE _counted AS
        SELECT *, count_if(mode = 'cot') OVER (PARTITION BY problem_id) AS _cot,
                  count_if(mode = 'pot') OVER (PARTITION BY problem_id) AS _pot
        FROM _distinct WHERE _i <= {k}""")
    ws.execute("DROP TABLE _distinct")
    both = "(_cot > 0 AND _pot > 0)"
    stats["dropped_no_agreement"] = count("_counted", f"NOT {both}") if policy.require_agreement else 0
    agreed = f"{both}" if policy.require_agreement else "true"
    balanced = f"(NOT {both} OR _i <= least(_cot, _pot))" if policy.balance_modes else "true"
    stats["dropped_balance"] = count("_counted", f"{agreed} AND NOT {balanced}")
    ws.execute(f"""CREATE OR REPLACE TABLE chosen AS
        SELECT c.* EXCLUDE (_norm), k._rank, k._i FROM cand c
        JOIN (SELECT request_key, _rank, _i FROM _counted WHERE {agreed} AND {balanced}) k USING (request_key)""")
    ws.execute("DROP TABLE _counted; DROP TABLE cand")

    before = count("chosen")
    apply_quotas(ws, policy.teacher_quotas or {})
    stats["dropped_quota"] = before - count("chosen")
    return stats


def apply_quotas(ws: Workspace, quotas: dict[str, float]) -> None:
    """Cap each listed teacher's share of rows (table `chosen`), dropping its lowest-ranked rows first.

    With n_t rows for teacher t and n_o for the others, share <= q needs n_t <= q * n_o / (1 - q).
    """
    for teacher, q in sorted(quotas.items()):
        n_t = ws.scalar("SELECT count(*) FROM chosen WHERE teacher = ?", [teacher])
        n_o = ws.scalar("SELECT count(*) FROM chosen") - n_t
        allowed = n_t if q >= 1 else int(q * n_o / (1 - q))
        if n_t > allowed:
            ws.execute("DELETE FROM chosen WHERE teacher = ? AND request_key NOT IN (SELECT request_key FROM chosen "
                       "WHERE teacher = ? ORDER BY _rank, request_key LIMIT ?)", [teacher, teacher, allowed])


def to_rows(ws: Workspace, policy: MixPolicy) -> None:
    """Steps 6-7: table `rows`, the chosen rationales with id, model input (mode prefix), split and export position."""
    ws.execute("DROP TABLE IF EXISTS rows")
    ws.create_ordered("rows", "chosen", ROW_ORDER, f"""s.*, task || '-' || source_id || '-' || mode || '-' ||
        _i::VARCHAR AS id, {input_sql()} AS input, {split_column(policy)} AS split""")
    ws.execute("DROP TABLE chosen")


class Mixed:
    """The rows of a mix, held in a workspace (table `rows`): per config, counted, read in chunks or as a frame."""

    def __init__(self, ws: Workspace, stats: dict, remixed: str | None = None):
        self.ws = ws
        self.stats = stats
        self.remixed = remixed  # how an incremental mix (`mixdistill.remix`) got these rows from a parent version

    def __enter__(self) -> "Mixed":
        return self

    def __exit__(self, *exc) -> None:
        self.ws.close()

    def where(self, config: str, split: str | None = None) -> str:
        return CONFIG_FILTER[config] + ("" if split is None else f" AND split = {_literal(split)}")

    def count(self, config: str, split: str | None = None) -> int:
        return self.ws.scalar(f"SELECT count(*) FROM rows WHERE {self.where(config, split)}")

    def sql(self, columns: str, config: str = "mixed", split: str | None = None) -> str:
        """`columns` of a config's rows (one split, or all), in the export's order (`rows` is stored in it)."""
        return f"SELECT {columns} FROM rows WHERE {self.where(config, split)}"

    def __getitem__(self, config: str) -> pl.DataFrame:
        """A config's rows with their `split` as one frame (for tests and small corpora; exports read chunks)."""
        columns = ", ".join(f'"{c}"' for c in (*ROW_COLUMNS, "split"))
        frame = self.ws.query(self.sql(columns, config))
        return frame if frame.height else pl.DataFrame(schema={c: pl.String for c in (*ROW_COLUMNS, "split")})


def load_candidates(ws: Workspace, chunks, excluded: set[str]) -> None:
    """Workspace tables `cand` (each chunk of candidate frames, prepared) and `excluded`."""
    for chunk in chunks:
        missing = set(CANDIDATE_COLUMNS) - set(chunk.columns)
        if missing:
            raise ValueError(f"candidates lack columns: {', '.join(sorted(missing))}")
        ws.append("cand", prepare(chunk))
    ws.append("excluded", pl.DataFrame({"problem_id": sorted(excluded)}, schema={"problem_id": pl.String}))


def mix_workspace(ws: Workspace, policy: MixPolicy) -> Mixed:
    """Steps 1-7 on a workspace whose `cand` and `excluded` tables are loaded (`load_candidates`)."""
    stats = select(ws, policy)
    to_rows(ws, policy)
    mixed = Mixed(ws, stats)
    stats["rows"] = {name: mixed.count(name) for name in CONFIG_FILTER}
    return mixed


def mix(candidates: pl.DataFrame, policy: MixPolicy, excluded: set[str]) -> tuple[Mixed, dict]:
    """Candidates (verified-correct rationales) -> the mixed rows (`mixed[config]`: rows with a `split` column),
    plus drop statistics. A frame of candidates is one chunk; builds stream theirs (`mixdistill.corpus`)."""
    ws = Workspace()
    try:
        load_candidates(ws, chunked(candidates), excluded)
        mixed = mix_workspace(ws, policy)
    except BaseException:
        ws.close()
        raise
    return mixed, mixed.stats


def chunked(frame: pl.DataFrame):
    """A frame in chunks of `workspace.CHUNK_ROWS` rows (one empty chunk for an empty frame)."""
    for offset in range(0, frame.height, workspace.CHUNK_ROWS):
        yield frame.slice(offset, workspace.CHUNK_ROWS)
    if frame.height == 0:
        yield frame
