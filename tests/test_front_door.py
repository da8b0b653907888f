"""The front door (issue 11): every mistake on the command line, through the real console script in a subprocess.

Each bad input gives exit code 2 and one message line (usage errors: click's usage message with one `Error:` line),
never a traceback, and the registry file stays byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

import mixdistill

CLI = shutil.which("mixdistill", path=str(Path(sys.executable).parent)) or "mixdistill"


def run(*args: str, registry: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "MIXDISTILL_REGISTRY": str(registry), "COLUMNS": "250", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def usage_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and done.stderr.startswith("Usage: "), done.stderr
    return errors[0]


@pytest.fixture
def stored(tmp_path, registry_path) -> Path:
    """A registry holding two custom problems."""
    data = tmp_path / "two.jsonl"
    data.write_text('{"id": "a", "q": "1+1?", "ans": 2}\n{"id": "b", "q": "2+2?", "ans": 4}\n', encoding="utf-8")
    done = run("problems", "import", "two", "--file", str(data), "--question", "q", "--answer", "ans", "--id", "id",
               registry=registry_path)
    assert done.returncode == 0, done.stderr
    return registry_path


def build_recipe(tmp_path: Path, name: str = "r.yaml", **changes) -> Path:
    recipe = {
        "name": "front-door",
        "tasks": [{"task": "svamp", "split": "train"}],
        "teachers": [{"provider": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}],
        "modes": ["cot"],
        "samples": {"cot": 1},
    }
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(recipe), encoding="utf-8")  # JSON is YAML
    return path


def test_version_and_short_help(registry_path):
    done = run("--version", registry=registry_path)
    assert done.returncode == 0 and done.stdout.strip() == f"mixdistill {mixdistill.__version__}"
    done = run("-h", registry=registry_path)
    assert done.returncode == 0 and done.stdout.startswith("Usage: mixdistill") and "sql" in done.stdout
    assert "<bool>" not in done.stdout
    done = run("sql", "-h", registry=registry_path)
    assert done.returncode == 0 and "--output" in done.stdout


def test_usage_errors_are_clicks_message_and_exit_2(stored):
    before = digest(stored)
    cases = [
        (["nope"], "No such command 'nope'"),
        (["sql"], "Missing argument"),
        (["--bogus"], "No such option: --bogus"),
        (["sql", "select 1", "--bogus"], "No such option: --bogus"),
        (["verify", "--workers", "-1"], "--workers"),
        (["sql", "select 1", "--format", "xml"], "--format"),
        (["--verbose", "--quiet", "info"], "--verbose and --quiet"),
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run(*c[0], registry=stored), cases))
    for (args, says), done in zip(cases, results):
        assert done.returncode == 2, (args, done.stderr)
        assert says in usage_error(done), args
    assert digest(stored) == before


def test_bad_input_is_one_line_exit_2_and_registry_unchanged(stored, tmp_path):
    before = digest(stored)
    cases: list[tuple[list[str], str]] = []

    dup = tmp_path / "dup.csv"
    dup.write_text("id,q,ans\nx,1+1?,2\nx,2+2?,4\n", encoding="utf-8")
    cases.append((["problems", "import", "dup", "--file", str(dup), "--question", "q", "--answer", "ans", "--id", "id"],
                  "id 'x' repeats row 0"))
    blank = tmp_path / "blank.csv"
    blank.write_text("id,q,ans\nx,1+1?,2\n,2+2?,4\n", encoding="utf-8")
    cases.append((["problems", "import", "blank", "--file", str(blank), "--question", "q", "--answer", "ans",
                   "--id", "id"], "row 1: empty id"))
    cases.append((["problems", "import", "blank", "--file", str(blank), "--question", "q", "--answer", "ans",
                   "--id", ""], "--id"))
    header = tmp_path / "header.csv"
    header.write_text("id,q,ans\n", encoding="utf-8")
    cases.append((["problems", "import", "header", "--file", str(header), "--question", "q", "--answer", "ans"],
                  "no rows"))
    cases.append((["problems", "import", "two", "--file", str(dup), "--question", "q", "--answer", "ans",
                   "--answer-type", "money"], "answer_type"))

    dupkeys = tmp_path / "dupkeys.yaml"
    dupkeys.write_text("name: a\nname: b\ntasks: [{task: svamp}]\nteachers: [{provider: openai, model: m}]\n",
                       encoding="utf-8")
    cases.append((["generate", str(dupkeys)], "key 'name' appears twice"))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    cases.append((["generate", str(latin)], "not UTF-8"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    cases.append((["generate", str(empty)], "the file is empty"))
    quotas = build_recipe(tmp_path, "quotas.yaml", mix={"teacher_quotas": {"gpt-9": 0.5}})
    cases.append((["generate", str(quotas)], "mix.teacher_quotas: unknown teacher 'gpt-9'"))
    url = build_recipe(tmp_path, "url.yaml",
                       teachers=[{"provider": "openai-compatible", "model": "m", "base_url": "not a url"}])
    cases.append((["generate", str(url)], "teachers.0.base_url"))
    rule = build_recipe(tmp_path, "rule.yaml", rule="strikt")
    cases.append((["build", str(rule)], "rule: unknown rule 'strikt'"))
    evalsplit = build_recipe(tmp_path, "evalsplit.yaml", tasks=[{"task": "svamp", "split": "test"}])
    cases.append((["build", str(evalsplit)], "svamp/test is the task's evaluation split"))
    train = tmp_path / "train.yaml"
    train.write_text("kind: train\nname: t\nstudent: ${MIXDISTILL_HOME}/models/none\ncorpus: {parquet: x}\n"
                     "output_dir: out\n", encoding="utf-8")
    cases.append((["train", str(train)], "student: model path"))
    evalr = tmp_path / "eval.yaml"
    evalr.write_text("kind: eval\nname: e\nmodel: ~/no-such-model-here\ntasks: [{task: svamp, split: test}]\n",
                     encoding="utf-8")
    cases.append((["eval", str(evalr)], "model: model path"))

    cases.append((["sql", "select 1", "--format", "csv", "--output", str(tmp_path / "missing" / "out.csv")],
                  "does not exist"))
    for query, says in [
        (f"COPY problems TO '{tmp_path / 'leak.csv'}'", "COPY statements are refused"),
        (f"EXPORT DATABASE '{tmp_path / 'exported'}'", "EXPORT statements are refused"),
        (f"ATTACH '{tmp_path / 'other.duckdb'}'", "ATTACH statements are refused"),
        ("INSTALL sqlite", "INSTALL/LOAD statements are refused"),
        ("LOAD sqlite", "INSTALL/LOAD statements are refused"),
        ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
        ("SET enable_external_access = true", "locked"),
        ("DELETE FROM problems", "read-only"),
    ]:
        cases.append((["sql", query], says))

    # Independent processes (none of them gets as far as writing), run a few at a time to keep the suite quick.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run(*c[0], registry=stored, env={"MIXDISTILL_HOME": str(tmp_path / "h")}),
                                cases))
    for (args, says), done in zip(cases, results):
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        line = one_line(done)
        assert says in line, (args, line)
        assert "errors.pydantic.dev" not in line
    assert digest(stored) == before
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "exported").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_unusable_registry_files_are_one_line_and_untouched(tmp_path):
    truncated = tmp_path / "truncated.duckdb"
    with duckdb.connect(str(truncated)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(100000)")
    truncated.write_bytes(truncated.read_bytes()[:20000])
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE schema_migrations (id VARCHAR, applied VARCHAR); INSERT INTO schema_migrations "
                    "VALUES ('0001_init', 'yesterday')")
    sqlite = tmp_path / "sqlite.db"
    import sqlite3

    with sqlite3.connect(sqlite) as con:
        con.execute("CREATE TABLE t (x)")
    data = tmp_path / "one.jsonl"
    data.write_text('{"q": "1+1?", "ans": 2}\n', encoding="utf-8")
    write = ["problems", "import", "one", "--file", str(data), "--question", "q", "--answer", "ans"]
    files = [(truncated, "registry"), (foreign, "not a mixdistill registry"), (sqlite, "registry")]
    before = {path: digest(path) for path, _ in files}
    for args in (write, ["info"], ["sql", "select 1"]):  # one process per file at a time: writers lock
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda f: run(*args, registry=f[0]), files))
        for (path, says), done in zip(files, results):
            assert done.returncode == 2, (path.name, args, done.stderr)
            assert says in one_line(done), (path.name, args)
            assert digest(path) == before[path], (path.name, args)

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    done = run(*write, registry=blocker / "registry.duckdb")
    assert done.returncode == 2 and "is a file, not a folder" in one_line(done)
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_help_imports_no_provider_sdk_or_ml_stack(registry_path):
    code = (
        "import sys; from mixdistill.cli import main; sys.argv = ['mixdistill', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('openai', 'anthropic', 'torch', 'transformers', 'datasets', 'matplotlib', 'polars', 'pyarrow')\n"
        "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_a_command_line_imports_only_its_command_module():
    """Every command and group is mapped to the module that defines it; `generate` loads no other command module."""
    import mixdistill.cli as cli

    app = cli.app  # every module imported
    defined = {c.name or c.callback.__name__: c.callback.__module__ for c in app.registered_commands}
    defined |= {g.name: next(iter(g.typer_instance.registered_commands)).callback.__module__
                for g in app.registered_groups if g.name != "bench"}
    assert {name: f"mixdistill.cli.{module}" for name, module in cli.COMMAND_MODULES.items()} == defined
    assert set(cli.ALL_MODULES) == {m.rsplit(".", 1)[1] for m in defined.values()} | {"scale"}  # scale: bench only
    import typer.main

    # the global options that take a value, which `load_commands` skips to find the command's name
    valued = {opt for p in typer.main.get_command(app).params if not p.is_flag for opt in p.opts}
    assert valued == set(cli._GLOBAL_OPTIONS_WITH_VALUE)
    code = ("import sys; from mixdistill.cli import load_commands\n"
            "load_commands(['--registry', 'r.duckdb', '-q', 'generate', 'r.yaml'])\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mixdistill.cli.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mixdistill.cli.common", "mixdistill.cli.core", "mixdistill.cli.generate",
                                   "mixdistill.cli.timing"]


def test_generate_imports_no_arrow_numpy_or_provider_sdk(tmp_path, monkeypatch):
    """issue 13 item 5: a cold `generate` against an OpenAI-style server loads its HTTP client, not pyarrow and numpy
    (0.2-0.3 s of start-up: DuckDB gets polars frames through the Arrow C stream interface) nor an SDK."""
    import yaml

    from mixdistill.cli.generate import BENCH_KEY_ENV, _bench_recipe, _Server

    server = _Server(0.0)
    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump(_bench_recipe(tmp_path, 20, 4, f"http://127.0.0.1:{server.port}/v1")))
        code = ("import atexit, sys; from mixdistill.cli import main\n"
                "atexit.register(lambda: print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr))\n"
                f"sys.argv = ['mixdistill', '--registry', {str(tmp_path / 'r.duckdb')!r}, 'generate', {str(recipe)!r},"
                " '--no-progress']\nmain()\n")
        monkeypatch.setenv(BENCH_KEY_ENV, "sk-test-not-a-secret")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "20 requests: 0 cached, 20 sent" in " ".join(done.stdout.split())
    loaded = set(done.stderr.split())
    assert "aiohttp" in loaded and "polars" in loaded and "duckdb" in loaded
    assert not loaded & {"pyarrow", "numpy", "pandas", "openai", "anthropic", "torch", "datasets"}, loaded


def test_the_package_imports_from_the_folder_above_a_clone(tmp_path):
    """The README's layout: the clone (a folder named mixdistill) next to shared/, Python run from their parent."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "mixdistill").symlink_to(repo, target_is_directory=True)
    code = ("import mixdistill; from mixdistill.cards import make_plots; from mixdistill.cli import main; "
            "print(mixdistill.__version__)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == mixdistill.__version__


def test_sql_shows_intervals_and_writes_only_the_file_asked_for(stored, tmp_path):
    done = run("sql", "SELECT INTERVAL 3 DAY + INTERVAL 2 HOUR AS waited, 1 AS n", "-f", "csv", registry=stored)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["waited,n", "3 days 02:00:00,1"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = run("sql", "SELECT count(*) AS n FROM problems", "-f", "json", "-o", str(out_dir / "n.json"), registry=stored)
    assert done.returncode == 0 and json.loads((out_dir / "n.json").read_text()) == [{"n": 2}]
    assert [p.name for p in out_dir.iterdir()] == ["n.json"]


def test_data_dir_is_resolved_one_way_for_tasks_and_recipes(cli, tmp_path, monkeypatch):
    from mixdistill import settings
    from mixdistill.recipe import BuildRecipe, load_recipe

    recipe_dir = tmp_path / "recipes"
    recipe_dir.mkdir()
    recipe = recipe_dir / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "d", "teachers": [{"provider": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}],
        "tasks": [{"custom": {"name": "mine", "path": "${MIXDISTILL_DATA}/mine/p.jsonl", "question": "q",
                              "answer": "a"}}],
    }), encoding="utf-8")
    # a relative $MIXDISTILL_DATA is taken from the current folder by tasks and by recipes alike
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIXDISTILL_DATA", "data")
    assert settings.data_dir() == tmp_path / "data"
    assert load_recipe(recipe, BuildRecipe).tasks[0].custom.path == tmp_path / "data" / "mine" / "p.jsonl"
    # --data-dir beats the environment, and fills ${MIXDISTILL_DATA} in recipes
    flag = tmp_path / "flag-data"
    replay = recipe_dir / "replay.yaml"
    replay.write_text(json.dumps({
        "name": "d", "teachers": [{"provider": "replay", "model": "rec", "path": "${MIXDISTILL_DATA}/rec.jsonl"}],
        "tasks": [{"task": "svamp", "split": "train"}],
    }), encoding="utf-8")
    code, out, err = cli("--data-dir", str(flag), "teachers", "--recipe", str(replay))
    assert code == 0, err
    assert str(flag / "rec.jsonl") in out.replace("\n", "").replace("│", "").replace(" ", "")
    assert settings.data_dir() == tmp_path / "data"  # the flag lasts for its command only


def test_model_paths_expand_like_every_recipe_path(tmp_path, monkeypatch):
    """issue 16 item 2: `student`, `model`, `adapter`, `output_dir` expand `~` and ${VARS} the same way."""
    from mixdistill.recipe import EvalRecipe, TrainRecipe, load_recipe

    home = tmp_path / "home"
    monkeypatch.setenv("MIXDISTILL_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    train = tmp_path / "t.yaml"
    train.write_text("kind: train\nname: t\nstudent: ${MIXDISTILL_HOME}/models/s\ncorpus: {parquet: ~/c}\n"
                     "output_dir: ${MIXDISTILL_HOME}/runs/t\n", encoding="utf-8")
    spec = load_recipe(train, TrainRecipe)
    assert spec.student == str(home / "models" / "s") and spec.output_dir == home / "runs" / "t"
    assert spec.corpus.parquet == tmp_path / "user" / "c"
    assert spec.preflight() == [f"student: model path {home / 'models' / 's'} does not exist"]
    (home / "models" / "s").mkdir(parents=True)
    assert spec.preflight() == []
    ev = tmp_path / "e.yaml"
    ev.write_text("kind: eval\nname: e\nmodel: ~/m\nadapter: ${MIXDISTILL_HOME}/runs/t\n"
                  "tasks: [{task: svamp, split: test}]\n", encoding="utf-8")
    spec = load_recipe(ev, EvalRecipe)
    assert spec.model == str(tmp_path / "user" / "m") and spec.adapter == home / "runs" / "t"
    assert load_recipe(train, TrainRecipe).model_copy(update={"student": "meta-llama/Llama-2-7b-hf"}).preflight() == []


def test_registry_memory_limit_is_set_explicitly_and_a_bad_value_is_one_line(stored, tmp_path):
    before = digest(stored)
    data = tmp_path / "more.jsonl"
    data.write_text('{"id": "c", "q": "3+3?", "ans": 6}\n', encoding="utf-8")
    args = ["problems", "import", "more", "--file", str(data), "--question", "q", "--answer", "ans", "--id", "id"]
    done = run(*args, registry=stored, env={"MIXDISTILL_DB_MEMORY": "lots"})
    assert done.returncode == 2 and "MIXDISTILL_DB_MEMORY" in one_line(done)
    assert digest(stored) == before
    shown = run("sql", "SELECT current_setting('memory_limit') AS m", "--format", "csv", registry=stored,
                env={"MIXDISTILL_DB_MEMORY": "256MB"})
    assert shown.returncode == 0 and "244.1 MiB" in shown.stdout, shown.stdout + shown.stderr
    default = run("sql", "SELECT current_setting('memory_limit') AS m", "--format", "csv", registry=stored)
    assert "953.6 MiB" in default.stdout, default.stdout  # 1GB unless told otherwise, not 80% of the machine


def test_a_query_beyond_duckdbs_memory_limit_is_one_line_naming_the_setting(tmp_path):
    """Not only writes: any query DuckDB cannot run within the limit (here the fingerprint of a registry of 2x10^4
    generations at 16MB; at the default 1GB, the candidates of 2x10^6 CoT + PoT generations) says what to raise."""
    done = run("bench", "remix", "-n", "20000", "--work", str(tmp_path / "work"), registry=tmp_path / "unused.duckdb",
               env={"MIXDISTILL_DB_MEMORY": "16MB"})
    assert done.returncode == 1
    line = one_line(done)
    assert "DuckDB ran out of memory within its limit ($MIXDISTILL_DB_MEMORY=16MB)" in line, line
    assert "set $MIXDISTILL_DB_MEMORY higher" in line
    without = run("bench", "remix", "-n", "20000", "--work", str(tmp_path / "again"),
                  registry=tmp_path / "unused.duckdb")
    assert without.returncode == 0, without.stderr  # the same bench at the default limit


def test_a_write_beyond_the_registry_memory_limit_is_one_line_naming_the_setting(stored, tmp_path):
    """A write DuckDB cannot do within the registry's memory limit says which setting to raise."""
    data = tmp_path / "wide.jsonl"
    data.write_text("".join(json.dumps({"id": f"w{i}-" + "x" * 40, "q": "y" * 300 + str(i), "ans": i}) + "\n"
                            for i in range(150_000)), encoding="utf-8")
    done = run("problems", "import", "wide", "--file", str(data), "--question", "q", "--answer", "ans", "--id", "id",
               registry=stored, env={"MIXDISTILL_DB_MEMORY": "8MB"})
    assert done.returncode == 2
    line = one_line(done)
    assert "needs more memory than the registry's limit (8MB)" in line and "MIXDISTILL_DB_MEMORY" in line
    with duckdb.connect(str(stored), read_only=True) as con:  # the two problems stored before are still there
        assert con.execute("SELECT count(*) FROM problems").fetchone()[0] == 2
