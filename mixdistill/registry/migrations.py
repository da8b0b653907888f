"""Numbered schema migrations of the registry.

Each migration is a small function, applied once in order and recorded in `schema_migrations`; its version is its
position in `MIGRATIONS` (1-based). Never edit a released migration: append a new one. A file whose recorded version
is above `len(MIGRATIONS)` was written by a newer mixdistill and is refused (see `Registry.open`).
"""

from __future__ import annotations

from typing import Callable

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_core_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Problems, prompts, teachers, generations (the request cache), executions, verdicts and the rest of DESIGN.md."""
    con.execute(
        """
        CREATE TABLE problems (
            problem_id   VARCHAR PRIMARY KEY,
            task         VARCHAR NOT NULL,
            question     VARCHAR NOT NULL,
            answer_type  VARCHAR NOT NULL,   -- 'number' | 'bool'
            gold_text    VARCHAR NOT NULL,
            gold_number  DOUBLE,
            gold_bool    BOOLEAN,
            source       VARCHAR NOT NULL,
            source_id    VARCHAR NOT NULL,
            license      VARCHAR,
            created_at   TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE problem_splits (
            task       VARCHAR NOT NULL,
            split      VARCHAR NOT NULL,
            problem_id VARCHAR NOT NULL,
            position   INTEGER NOT NULL,     -- order in the source file
            PRIMARY KEY (task, split, problem_id)
        );
        CREATE TABLE prompts (
            prompt_id  VARCHAR PRIMARY KEY,  -- hash(template + exemplars)
            task       VARCHAR,
            mode       VARCHAR NOT NULL,     -- 'cot' | 'pot'
            name       VARCHAR,
            template   VARCHAR NOT NULL,
            exemplars  VARCHAR,              -- JSON
            created_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE teachers (
            teacher_id VARCHAR PRIMARY KEY,  -- hash(provider, model, base_url)
            name       VARCHAR,
            provider   VARCHAR NOT NULL,
            model      VARCHAR NOT NULL,
            base_url   VARCHAR,
            settings   VARCHAR,              -- JSON, never holds secrets
            created_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE generations (
            request_key       VARCHAR PRIMARY KEY,
            teacher_id        VARCHAR NOT NULL,
            prompt_id         VARCHAR NOT NULL,
            problem_id        VARCHAR NOT NULL,
            mode              VARCHAR NOT NULL,
            sample_index      INTEGER NOT NULL,
            params            VARCHAR,       -- JSON sampling params
            status            VARCHAR NOT NULL, -- 'ok' | 'error' | ...
            response_text     VARCHAR,
            finish_reason     VARCHAR,
            error             VARCHAR,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            cost_usd          DOUBLE,
            latency_s         DOUBLE,
            batch_id          VARCHAR,
            run_id            VARCHAR,
            created_at        TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE batches (
            batch_id     VARCHAR PRIMARY KEY,
            teacher_id   VARCHAR NOT NULL,
            provider     VARCHAR NOT NULL,
            status       VARCHAR NOT NULL,
            request_keys VARCHAR NOT NULL,   -- JSON list
            run_id       VARCHAR,
            created_at   TIMESTAMP DEFAULT current_timestamp,
            updated_at   TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE executions (
            request_key     VARCHAR NOT NULL,
            sandbox_version VARCHAR NOT NULL,
            status          VARCHAR NOT NULL, -- ok | error | timeout | memory | forbidden | no-answer
            answer          VARCHAR,
            answer_number   DOUBLE,
            stdout_head     VARCHAR,
            error_class     VARCHAR,
            error_message   VARCHAR,
            runtime_s       DOUBLE,
            created_at      TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (request_key, sandbox_version)
        );
        CREATE TABLE verdicts (
            request_key  VARCHAR NOT NULL,
            rule         VARCHAR NOT NULL,
            rule_version VARCHAR NOT NULL,
            extracted    VARCHAR,
            correct      BOOLEAN NOT NULL,
            reason       VARCHAR,
            created_at   TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (request_key, rule, rule_version)
        );
        CREATE TABLE runs (
            run_id      VARCHAR PRIMARY KEY,
            kind        VARCHAR NOT NULL,    -- build | generate | verify | train | eval
            name        VARCHAR,
            recipe      VARCHAR,             -- JSON
            status      VARCHAR NOT NULL,    -- running | done | failed
            error       VARCHAR,
            started_at  TIMESTAMP DEFAULT current_timestamp,
            finished_at TIMESTAMP
        );
        CREATE TABLE corpora (
            corpus_id    VARCHAR PRIMARY KEY,
            name         VARCHAR NOT NULL,
            version      VARCHAR NOT NULL,   -- semver
            fingerprint  VARCHAR NOT NULL,   -- hash(selected request keys, mixing policy, verifier version)
            recipe       VARCHAR,
            lineage      VARCHAR,
            stats        VARCHAR,
            parent       VARCHAR,
            hub_repo     VARCHAR,
            hub_revision VARCHAR,
            created_at   TIMESTAMP DEFAULT current_timestamp,
            UNIQUE (name, version)
        );
        CREATE TABLE corpus_rows (
            corpus_id   VARCHAR NOT NULL,
            config      VARCHAR NOT NULL,    -- cot | pot | mixed
            split       VARCHAR NOT NULL,
            row_id      VARCHAR NOT NULL,
            request_key VARCHAR NOT NULL,
            problem_id  VARCHAR NOT NULL,
            PRIMARY KEY (corpus_id, config, row_id)
        );
        CREATE TABLE models (
            model_id      VARCHAR PRIMARY KEY,
            run_id        VARCHAR,
            base_model    VARCHAR NOT NULL,
            base_revision VARCHAR,
            adapter_path  VARCHAR,
            corpus_id     VARCHAR,
            recipe        VARCHAR,
            metrics       VARCHAR,
            hub_repo      VARCHAR,
            hub_revision  VARCHAR,
            created_at    TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE evals (
            eval_id    VARCHAR PRIMARY KEY,
            run_id     VARCHAR,
            model      VARCHAR NOT NULL,
            task       VARCHAR NOT NULL,
            split      VARCHAR NOT NULL,
            mode       VARCHAR NOT NULL,     -- cot | pot | md
            k          INTEGER NOT NULL,
            rule       VARCHAR,
            n          INTEGER,
            correct    INTEGER,
            accuracy   DOUBLE,
            summary    VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE eval_samples (
            eval_id      VARCHAR NOT NULL,
            problem_id   VARCHAR NOT NULL,
            mode         VARCHAR NOT NULL,
            sample_index INTEGER NOT NULL,
            input        VARCHAR,
            output       VARCHAR,
            extracted    VARCHAR,
            correct      BOOLEAN,
            status       VARCHAR,
            PRIMARY KEY (eval_id, problem_id, mode, sample_index)
        );
        """
    )


@migration
def m002_audit_views(con: duckdb.DuckDBPyConnection) -> None:
    """The audit questions users ask, as views (README, "Auditing with SQL")."""
    con.execute(
        """
        -- the most recent verdict per generation (a newer rule version supersedes an older one)
        CREATE VIEW latest_verdicts AS
        SELECT * FROM verdicts
        QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY created_at DESC, rule_version DESC) = 1;

        CREATE VIEW audit_pass_rate AS
        SELECT t.name AS teacher, t.provider, t.model, g.mode, p.task,
               count(*) AS generated,
               count(v.request_key) AS verified,
               count_if(v.correct) AS correct,
               round(count_if(v.correct) / nullif(count(v.request_key), 0), 4) AS pass_rate
        FROM generations g
        JOIN teachers t USING (teacher_id)
        JOIN problems p USING (problem_id)
        LEFT JOIN latest_verdicts v USING (request_key)
        GROUP BY ALL ORDER BY ALL;

        CREATE VIEW audit_failures AS
        SELECT t.name AS teacher, g.mode, p.task,
               coalesce(e.status, CASE WHEN g.status <> 'ok' THEN 'generation-' || g.status END,
                        CASE WHEN v.correct THEN 'correct' WHEN v.correct = false THEN 'wrong-answer' END,
                        'unverified') AS outcome,
               e.error_class,
               count(*) AS n
        FROM generations g
        JOIN teachers t USING (teacher_id)
        JOIN problems p USING (problem_id)
        LEFT JOIN latest_verdicts v USING (request_key)
        LEFT JOIN executions e ON e.request_key = g.request_key AND e.status <> 'ok'
        GROUP BY ALL ORDER BY n DESC;

        CREATE VIEW audit_mode_disagreement AS
        SELECT g.problem_id, p.task, any_value(p.question) AS question,
               count_if(g.mode = 'cot' AND v.correct) AS cot_correct, count_if(g.mode = 'cot') AS cot_total,
               count_if(g.mode = 'pot' AND v.correct) AS pot_correct, count_if(g.mode = 'pot') AS pot_total
        FROM generations g
        JOIN problems p USING (problem_id)
        JOIN latest_verdicts v USING (request_key)
        GROUP BY ALL
        HAVING (count_if(g.mode = 'cot' AND v.correct) > 0) <> (count_if(g.mode = 'pot' AND v.correct) > 0)
           AND count_if(g.mode = 'cot') > 0 AND count_if(g.mode = 'pot') > 0;

        CREATE VIEW audit_cost AS
        SELECT t.name AS teacher, t.model, g.mode,
               sum(g.cost_usd) AS cost_usd,
               sum(g.prompt_tokens) AS prompt_tokens, sum(g.completion_tokens) AS completion_tokens,
               count_if(v.correct) AS verified_correct,
               sum(g.cost_usd) / nullif(count_if(v.correct), 0) AS cost_per_verified
        FROM generations g
        JOIN teachers t USING (teacher_id)
        LEFT JOIN latest_verdicts v USING (request_key)
        GROUP BY ALL ORDER BY ALL;
        """
    )


@migration
def m003_audit_views_per_rule(con: duckdb.DuckDBPyConnection) -> None:
    """Audit views that keep answer rules apart and count each generation once.

    m002's `latest_verdicts` kept the newest verdict of *any* rule, so verifying with `strict` and then `pot-rounding`
    silently switched every view to `pot-rounding`; and `audit_failures` joined every failed execution, counting a
    generation twice once its program had run under two sandbox versions.
    """
    con.execute(
        """
        DROP VIEW audit_cost; DROP VIEW audit_mode_disagreement; DROP VIEW audit_failures; DROP VIEW audit_pass_rate;
        DROP VIEW latest_verdicts;

        -- the newest verdict per generation and rule (a newer rule version supersedes an older one)
        CREATE VIEW latest_verdicts AS
        SELECT * FROM verdicts
        QUALIFY row_number() OVER (PARTITION BY request_key, rule ORDER BY rule_version DESC, created_at DESC) = 1;

        -- the most recent execution per generation (a newer sandbox version supersedes an older one)
        CREATE VIEW latest_executions AS
        SELECT * FROM executions
        QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY created_at DESC, sandbox_version DESC) = 1;

        CREATE VIEW generation_facts AS
        SELECT g.request_key, t.name AS teacher, t.provider, t.model, g.mode, p.task, g.problem_id, g.status,
               g.cost_usd, g.prompt_tokens, g.completion_tokens
        FROM generations g JOIN teachers t USING (teacher_id) JOIN problems p USING (problem_id);

        CREATE VIEW audit_pass_rate AS
        WITH totals AS (
            SELECT teacher, provider, model, mode, task, count(*)::BIGINT AS generated FROM generation_facts GROUP BY ALL
        ), judged AS (
            SELECT teacher, provider, model, mode, task, v.rule, count(*)::BIGINT AS verified, count_if(v.correct)::BIGINT AS correct
            FROM generation_facts JOIN latest_verdicts v USING (request_key) GROUP BY ALL
        )
        SELECT teacher, provider, model, mode, task, rule, generated,
               coalesce(verified, 0) AS verified, coalesce(correct, 0) AS correct,
               round(correct / nullif(verified, 0), 4) AS pass_rate
        FROM totals LEFT JOIN judged USING (teacher, provider, model, mode, task)
        ORDER BY ALL;

        CREATE VIEW audit_failures AS
        SELECT f.teacher, f.mode, f.task, v.rule,
               coalesce(CASE WHEN e.status <> 'ok' THEN e.status END,
                        CASE WHEN f.status <> 'ok' THEN 'generation-' || f.status END,
                        CASE WHEN v.correct THEN 'correct' WHEN v.correct = false THEN 'wrong-answer' END,
                        'unverified') AS outcome,
               CASE WHEN e.status <> 'ok' THEN e.error_class END AS error_class,
               count(*)::BIGINT AS n
        FROM generation_facts f
        LEFT JOIN latest_verdicts v USING (request_key)
        LEFT JOIN latest_executions e USING (request_key)
        GROUP BY ALL ORDER BY n DESC;

        CREATE VIEW audit_mode_disagreement AS
        SELECT f.problem_id, f.task, v.rule, any_value(p.question) AS question,
               count_if(f.mode = 'cot' AND v.correct)::BIGINT AS cot_correct, count_if(f.mode = 'cot')::BIGINT AS cot_total,
               count_if(f.mode = 'pot' AND v.correct)::BIGINT AS pot_correct, count_if(f.mode = 'pot')::BIGINT AS pot_total
        FROM generation_facts f
        JOIN problems p USING (problem_id)
        JOIN latest_verdicts v USING (request_key)
        GROUP BY ALL
        HAVING (count_if(f.mode = 'cot' AND v.correct) > 0) <> (count_if(f.mode = 'pot' AND v.correct) > 0)
           AND count_if(f.mode = 'cot') > 0 AND count_if(f.mode = 'pot') > 0;

        CREATE VIEW audit_cost AS
        WITH spend AS (
            SELECT teacher, model, mode, sum(cost_usd) AS cost_usd, sum(prompt_tokens)::BIGINT AS prompt_tokens,
                   sum(completion_tokens)::BIGINT AS completion_tokens
            FROM generation_facts GROUP BY ALL
        ), verified AS (
            SELECT teacher, model, mode, v.rule, count_if(v.correct)::BIGINT AS verified_correct
            FROM generation_facts JOIN latest_verdicts v USING (request_key) GROUP BY ALL
        )
        SELECT teacher, model, mode, rule, cost_usd, prompt_tokens, completion_tokens,
               coalesce(verified_correct, 0) AS verified_correct,
               cost_usd / nullif(verified_correct, 0) AS cost_per_verified
        FROM spend LEFT JOIN verified USING (teacher, model, mode)
        ORDER BY ALL;
        """
    )


@migration
def m004_execution_conventions(con: duckdb.DuckDBPyConnection) -> None:
    """What opt-in PoT answer conventions read, kept with each execution so a rule that uses them re-judges stored
    executions without running them again: the last line a program printed, and the first element of a tuple."""
    con.execute("""
        ALTER TABLE executions ADD COLUMN printed VARCHAR;
        ALTER TABLE executions ADD COLUMN first_answer VARCHAR;
        ALTER TABLE executions ADD COLUMN first_number DOUBLE;
    """)


@migration
def m005_reasoning_traces(con: duckdb.DuckDBPyConnection) -> None:
    """Reasoning teachers: the trace is kept apart from the final answer (`response_text`, what verification judges),
    with the reasoning tokens the provider reports (a part of `completion_tokens`, billed at the output price, so
    `cost_usd` already includes them). `audit_reasoning`: reasoning tokens and cost per verified rationale by
    teacher x mode x rule."""
    con.execute(
        """
        ALTER TABLE generations ADD COLUMN reasoning_text VARCHAR;
        ALTER TABLE generations ADD COLUMN reasoning_tokens INTEGER;

        CREATE VIEW audit_reasoning AS
        WITH spend AS (
            SELECT t.name AS teacher, t.model, g.mode, count(*)::BIGINT AS generated,
                   count(g.reasoning_text)::BIGINT AS with_trace,
                   sum(g.reasoning_tokens)::BIGINT AS reasoning_tokens,
                   sum(g.completion_tokens)::BIGINT AS completion_tokens,
                   round(avg(g.reasoning_tokens), 1) AS reasoning_tokens_per_answer,
                   sum(g.cost_usd) AS cost_usd
            FROM generations g JOIN teachers t USING (teacher_id) GROUP BY ALL
        ), verified AS (
            SELECT t.name AS teacher, t.model, g.mode, v.rule, count_if(v.correct)::BIGINT AS verified_correct
            FROM generations g JOIN teachers t USING (teacher_id) JOIN latest_verdicts v USING (request_key)
            GROUP BY ALL
        )
        SELECT teacher, model, mode, rule, generated, with_trace, reasoning_tokens, completion_tokens,
               reasoning_tokens_per_answer, cost_usd, coalesce(verified_correct, 0) AS verified_correct,
               cost_usd / nullif(verified_correct, 0) AS cost_per_verified,
               reasoning_tokens / nullif(verified_correct, 0) AS reasoning_tokens_per_verified
        FROM spend LEFT JOIN verified USING (teacher, model, mode)
        ORDER BY ALL;
        """
    )


@migration
def m006_runs_process(con: duckdb.DuckDBPyConnection) -> None:
    """Which process runs each run (pid, host), so a run whose process is gone is shown and recorded as
    `interrupted` instead of `running` forever (see `registry.runs.close_stale_runs`)."""
    con.execute(
        """
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN host VARCHAR;
        """
    )


@migration
def m007_audit_failures_reasons(con: duckdb.DuckDBPyConnection) -> None:
    """`audit_failures` lists failures only (no `correct` rows), and a failed verdict shows its own reason
    (`no-answer`, `non-numeric`, `non-finite`, `wrong-answer`...) instead of calling every one `wrong-answer`."""
    con.execute(
        """
        CREATE OR REPLACE VIEW audit_failures AS
        SELECT f.teacher, f.mode, f.task, v.rule,
               coalesce(CASE WHEN e.status <> 'ok' THEN e.status END,
                        CASE WHEN f.status <> 'ok' THEN 'generation-' || f.status END,
                        CASE WHEN v.correct = false THEN coalesce(v.reason, 'wrong-answer') END,
                        'unverified') AS outcome,
               CASE WHEN e.status <> 'ok' THEN e.error_class END AS error_class,
               count(*)::BIGINT AS n
        FROM generation_facts f
        LEFT JOIN latest_verdicts v USING (request_key)
        LEFT JOIN latest_executions e USING (request_key)
        WHERE v.correct IS DISTINCT FROM true
        GROUP BY ALL ORDER BY n DESC;
        """
    )


@migration
def m008_keys_without_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """The tables that grow with the corpus lose their PRIMARY KEY constraints. DuckDB keeps a key's ART index in its
    memory limit whenever a row is inserted (about 50 bytes a 16-character key, no fewer as a UBIGINT), so
    10^7 generations with their problems, split memberships, executions and verdicts outgrew the default 1GB. Their
    identities are unchanged and kept by the writers instead (`registry.keys`, `Registry.insert`). Each table is
    copied (rows in their order: DuckDB preserves insertion order) into one of the same columns, defaults and NOT NULLs without the key."""
    tables = {
        "problems": """problem_id VARCHAR NOT NULL, task VARCHAR NOT NULL, question VARCHAR NOT NULL,
            answer_type VARCHAR NOT NULL, gold_text VARCHAR NOT NULL, gold_number DOUBLE, gold_bool BOOLEAN,
            source VARCHAR NOT NULL, source_id VARCHAR NOT NULL, license VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp""",
        "problem_splits": """task VARCHAR NOT NULL, split VARCHAR NOT NULL, problem_id VARCHAR NOT NULL,
            position INTEGER NOT NULL""",
        "generations": """request_key VARCHAR NOT NULL, teacher_id VARCHAR NOT NULL, prompt_id VARCHAR NOT NULL,
            problem_id VARCHAR NOT NULL, mode VARCHAR NOT NULL, sample_index INTEGER NOT NULL, params VARCHAR,
            status VARCHAR NOT NULL, response_text VARCHAR, finish_reason VARCHAR, error VARCHAR, prompt_tokens INTEGER,
            completion_tokens INTEGER, cost_usd DOUBLE, latency_s DOUBLE, batch_id VARCHAR, run_id VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp, reasoning_text VARCHAR, reasoning_tokens INTEGER""",
        "executions": """request_key VARCHAR NOT NULL, sandbox_version VARCHAR NOT NULL, status VARCHAR NOT NULL,
            answer VARCHAR, answer_number DOUBLE, stdout_head VARCHAR, error_class VARCHAR, error_message VARCHAR,
            runtime_s DOUBLE, created_at TIMESTAMP DEFAULT current_timestamp, printed VARCHAR, first_answer VARCHAR,
            first_number DOUBLE""",
        "verdicts": """request_key VARCHAR NOT NULL, rule VARCHAR NOT NULL, rule_version VARCHAR NOT NULL,
            extracted VARCHAR, correct BOOLEAN NOT NULL, reason VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp""",
        "corpus_rows": """corpus_id VARCHAR NOT NULL, config VARCHAR NOT NULL, split VARCHAR NOT NULL,
            row_id VARCHAR NOT NULL, request_key VARCHAR NOT NULL, problem_id VARCHAR NOT NULL""",
    }
    for table, columns in tables.items():  # the views read them by name: they see the new tables once renamed
        con.execute(f"CREATE TABLE {table}_m008 ({columns}); INSERT INTO {table}_m008 SELECT * FROM {table};"
                    f" DROP TABLE {table}; ALTER TABLE {table}_m008 RENAME TO {table}")


@migration
def m009_audit_facts(con: duckdb.DuckDBPyConnection) -> None:
    """Audit views that answer in seconds at 10^7 generations. They spent their time ranking every verdict and every
    execution with a window (`latest_verdicts`, `latest_executions`) and joining every generation with its problem
    only for the task. Now a generation keeps its `task`, and the latest verdict of a generation and rule, and the
    latest execution of a generation, carry a `latest` flag kept by the writers (`registry.keys.LATEST`); the views
    filter on it. `audit_mode_disagreement` joins problems only for the problems it lists."""
    con.execute(
        """
        ALTER TABLE generations ADD COLUMN task VARCHAR;
        UPDATE generations SET task = p.task FROM problems p WHERE generations.problem_id = p.problem_id;
        ALTER TABLE verdicts ADD COLUMN latest BOOLEAN DEFAULT true;
        ALTER TABLE executions ADD COLUMN latest BOOLEAN DEFAULT true;
        UPDATE verdicts SET latest = false FROM (
            SELECT rowid AS rid FROM verdicts
            QUALIFY row_number() OVER (PARTITION BY request_key, rule ORDER BY rule_version DESC, created_at DESC) > 1
        ) x WHERE verdicts.rowid = x.rid;
        UPDATE executions SET latest = false FROM (
            SELECT rowid AS rid FROM executions
            QUALIFY row_number() OVER (PARTITION BY request_key ORDER BY created_at DESC, sandbox_version DESC) > 1
        ) x WHERE executions.rowid = x.rid;

        CREATE OR REPLACE VIEW latest_verdicts AS SELECT * EXCLUDE (latest) FROM verdicts WHERE latest;
        CREATE OR REPLACE VIEW latest_executions AS SELECT * EXCLUDE (latest) FROM executions WHERE latest;

        CREATE OR REPLACE VIEW generation_facts AS
        SELECT g.request_key, t.name AS teacher, t.provider, t.model, g.mode, g.task, g.problem_id, g.status,
               g.cost_usd, g.prompt_tokens, g.completion_tokens
        FROM generations g JOIN teachers t USING (teacher_id);

        CREATE OR REPLACE VIEW audit_mode_disagreement AS
        WITH per_problem AS (
            SELECT f.problem_id, f.task, v.rule,
                   count_if(f.mode = 'cot' AND v.correct)::BIGINT AS cot_correct,
                   count_if(f.mode = 'cot')::BIGINT AS cot_total,
                   count_if(f.mode = 'pot' AND v.correct)::BIGINT AS pot_correct,
                   count_if(f.mode = 'pot')::BIGINT AS pot_total
            FROM generation_facts f JOIN latest_verdicts v USING (request_key)
            GROUP BY ALL
            HAVING (cot_correct > 0) <> (pot_correct > 0) AND cot_total > 0 AND pot_total > 0
        )
        SELECT d.problem_id, d.task, d.rule, p.question, d.cot_correct, d.cot_total, d.pot_correct, d.pot_total
        FROM per_problem d JOIN problems p USING (problem_id);
        """
    )


@migration
def m010_batch_requests(con: duckdb.DuckDBPyConnection) -> None:
    """A Batch API batch's requests move from a JSON list in `batches.request_keys` to rows of `batch_requests`, each
    with what its answer's `generations` row needs (problem, mode, sample, prompt, task). A build then submits its
    batches as it walks the plan and ingests each one from these rows, holding one batch's requests instead of the
    whole plan's. Rows moved from a JSON list have no identity yet: the next build of their recipe fills it in
    (`generate._in_batches`) before it collects them."""
    con.execute(
        """
        CREATE TABLE batch_requests (
            batch_id     VARCHAR NOT NULL,
            request_key  VARCHAR NOT NULL,
            problem_id   VARCHAR,
            mode         VARCHAR,
            sample_index INTEGER,
            prompt_id    VARCHAR,
            task         VARCHAR
        );
        INSERT INTO batch_requests (batch_id, request_key)
            SELECT batch_id, unnest(from_json(request_keys, '["VARCHAR"]')) FROM batches;
        ALTER TABLE batches DROP COLUMN request_keys;
        """
    )


@migration
def m011_executed_programs(con: duckdb.DuckDBPyConnection) -> None:
    """An execution keeps the program it ran (`executions.program`, as `verify` extracted it from the response), so
    an audit reads what was executed, and every build takes its PoT rationales from there instead of extracting
    each program again (twice per build: corpus rows and audit table). Executions stored before have none; builds
    extract theirs as before."""
    con.execute("ALTER TABLE executions ADD COLUMN program VARCHAR")
