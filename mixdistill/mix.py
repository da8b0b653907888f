"""Mixing: verified rationales -> the rows of a corpus (pure polars, no I/O).

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
"""

from __future__ import annotations

import ast
import hashlib
import re

import polars as pl

from mixdistill.recipe import MixPolicy
from mixdistill.schema import COLUMNS

MODE_PREFIX = {"cot": "[CoT]", "pot": "[PoT]"}
CANDIDATE_COLUMNS = [
    "request_key", "problem_id", "task", "source_id", "question", "mode", "teacher", "prompt_id",
    "rationale", "answer", "gold", "rule",
]
ROW_COLUMNS = COLUMNS  # the corpus row schema lives in mixdistill.schema


def model_input(mode: str, question: str) -> str:
    """What the student sees: the mode prefix tells it which kind of rationale to write (multi-task training)."""
    return f"{MODE_PREFIX[mode]} {question}"


def input_column() -> pl.Expr:
    """`model_input` over the `mode` and `question` columns of a frame, as the `input` column."""
    return pl.format("{} {}", pl.col("mode").replace_strict(MODE_PREFIX, return_dtype=pl.String), "question").alias("input")


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


def stable_hash(salt: str, column: str) -> pl.Expr:
    """A 64-bit hash of `salt:value` from SHA-256: unlike polars' own hash it never changes between versions, so a
    rebuild with newer software picks the same rows and the same validation problems."""
    return pl.col(column).map_elements(
        lambda v: int(hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:16], 16), return_dtype=pl.UInt64
    )


def select(candidates: pl.DataFrame, policy: MixPolicy, excluded: set[str]) -> tuple[pl.DataFrame, dict]:
    """Steps 1-5: the chosen rationales and the counts dropped at each step (for the card)."""
    stats: dict[str, int] = {"candidates": candidates.height}
    df = candidates.filter(~pl.col("problem_id").is_in(list(excluded)))
    stats["dropped_contamination"] = stats["candidates"] - df.height
    before = df.height
    if policy.max_rationale_tokens is not None:
        df = df.filter(approx_tokens() <= policy.max_rationale_tokens)
    stats["dropped_over_length"] = before - df.height

    before = df.height
    df = df.with_columns(
        pl.struct("mode", "rationale").map_elements(
            lambda r: normalise_rationale(r["mode"], r["rationale"]), return_dtype=pl.String
        ).alias("_norm"),
        stable_hash(f"rank:{policy.seed}", "request_key").alias("_rank"),
    ).sort("_rank")
    exact = df.unique(["problem_id", "mode", "rationale"], keep="first", maintain_order=True)
    stats["dropped_exact_duplicates"] = before - exact.height
    df = exact.unique(["problem_id", "mode", "_norm"], keep="first", maintain_order=True)
    stats["dropped_normalised_duplicates"] = exact.height - df.height

    df = df.with_columns(pl.col("_rank").rank("ordinal").over(["problem_id", "mode"]).alias("_i"))
    before = df.height
    df = df.filter(pl.col("_i") <= policy.k_per_mode)
    stats["dropped_over_k"] = before - df.height

    counts = df.group_by("problem_id").agg(
        (pl.col("mode") == "cot").sum().alias("_cot"), (pl.col("mode") == "pot").sum().alias("_pot")
    )
    df = df.join(counts, on="problem_id")
    before = df.height
    if policy.require_agreement:
        df = df.filter((pl.col("_cot") > 0) & (pl.col("_pot") > 0))
    stats["dropped_no_agreement"] = before - df.height
    before = df.height
    if policy.balance_modes:
        both = (pl.col("_cot") > 0) & (pl.col("_pot") > 0)
        df = df.filter(~both | (pl.col("_i") <= pl.min_horizontal("_cot", "_pot")))
    stats["dropped_balance"] = before - df.height

    before = df.height
    df = apply_quotas(df, policy.teacher_quotas or {})
    stats["dropped_quota"] = before - df.height
    return df.drop("_norm", "_cot", "_pot"), stats


def apply_quotas(df: pl.DataFrame, quotas: dict[str, float]) -> pl.DataFrame:
    """Cap each listed teacher's share of rows, dropping its lowest-ranked rows first.

    With n_t rows for teacher t and n_o for the others, share <= q needs n_t <= q * n_o / (1 - q).
    """
    for teacher, q in sorted(quotas.items()):
        n_t = df.filter(pl.col("teacher") == teacher).height
        n_o = df.height - n_t
        allowed = n_t if q >= 1 else int(q * n_o / (1 - q))
        if n_t > allowed:
            keep = df.filter(pl.col("teacher") == teacher).sort("_rank").head(allowed)
            df = pl.concat([df.filter(pl.col("teacher") != teacher), keep])
    return df


def assign_splits(df: pl.DataFrame, policy: MixPolicy) -> pl.DataFrame:
    """Validation membership is a pure function of (seed, problem_id): stable when problems are added."""
    bucket = stable_hash(f"split:{policy.seed}", "problem_id")
    threshold = int(policy.validation_fraction * 2**64)
    return df.with_columns(
        pl.when(bucket < threshold).then(pl.lit("validation")).otherwise(pl.lit("train")).alias("split")
    )


def sort_rows(df: pl.DataFrame) -> pl.DataFrame:
    """The one row order of every export, so that the same selection always gives the same bytes."""
    return df.sort("task", "source_id", "mode", "_i")


def to_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Final corpus rows: id, model input with its mode prefix, and the lineage columns."""
    df = sort_rows(df).with_columns(
        pl.concat_str(["task", "source_id", "mode", pl.col("_i").cast(pl.String)], separator="-").alias("id"),
        input_column(),
    )
    return df.select(*ROW_COLUMNS, "split")


def mix(candidates: pl.DataFrame, policy: MixPolicy, excluded: set[str]) -> tuple[dict[str, pl.DataFrame], dict]:
    """Candidates (verified-correct rationales) -> {config: rows with a `split` column}, plus drop statistics."""
    missing = set(CANDIDATE_COLUMNS) - set(candidates.columns)
    if missing:
        raise ValueError(f"candidates lack columns: {', '.join(sorted(missing))}")
    chosen, stats = select(candidates, policy, excluded)
    rows = to_rows(assign_splits(chosen, policy))
    configs = {
        "cot": rows.filter(pl.col("mode") == "cot"),
        "pot": rows.filter(pl.col("mode") == "pot"),
        "mixed": rows,
    }
    stats["rows"] = {name: frame.height for name, frame in configs.items()}
    return configs, stats
