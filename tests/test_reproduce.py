"""`mixdistill reproduce` with a tiny random student on a few SVAMP test problems: every row, the table's shape, the
ensemble's pooling, resume after an interruption, and bad input through the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("peft")

import mixdistill.reproduce as rep  # noqa: E402
from mixdistill.evaluate.scores import StoredPath, score  # noqa: E402
from mixdistill.recipe import ReproduceRecipe, load_recipe  # noqa: E402
from mixdistill.registry import Registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLI = shutil.which("mixdistill", path=str(Path(sys.executable).parent)) or "mixdistill"
HEADS = ["CoT (greedy)", "PoT (greedy)", "MD vote (greedy)", "CoT k=2 maj.", "PoT k=2 maj.", "MD vote k=2"]
# which cells each row has (x) and leaves empty (.), in the order of HEADS
SHAPE = {
    rep.TEACHERS: "xxx...", rep.BASE: "xxxxxx", rep.COT: "x..x..", rep.POT: ".x..x.", rep.ENSEMBLE: "..x..x",
    rep.MD: "xxxxxx",
}


def recipe_file(folder: Path, student: Path, **update) -> Path:
    """A reproduction as small as it gets: 3 problems, k=2, 8 tokens, 2 training steps on 16 rows."""
    spec = {
        "kind": "reproduce", "name": "tiny", "student": str(student),
        "corpus": str(REPO / "recipes" / "svamp-published.yaml"),
        "teacher_eval": str(REPO / "recipes" / "eval-published-svamp.yaml"),
        "output_dir": str(folder / "out"),
        "train": {"max_steps": 2, "limit": 16, "batch_size": 4, "gradient_accumulation": 1, "max_length": 256,
                  "learning_rate": 1.0e-2, "warmup_ratio": 0.0, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                  "gradient_checkpointing": False, "precision": "fp32", "eval_split": None, "save_steps": 1,
                  "logging_steps": 1, "threads": 1, "seed": 0},
        "eval": {"limit": 3, "k": 2, "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 8, "seed": 0},
                 "batch_size": 3, "shots": 1, "threads": 1},
        **update,
    }
    path = folder / "reproduce.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory, shared_data_module) -> Path:
    from mixdistill.train.tiny import build_tiny_student

    svamp = json.loads((shared_data_module / "svamp" / "SVAMP.json").read_text())[:40]
    texts = [f"[CoT] [PoT] {p['Body']} {p['Question']}\nans = {p['Equation']}\nThe answer is {p['Answer']}."
             for p in svamp] + ["Question: Answer: Let's think step by step. def solution(): return"]
    return build_tiny_student(texts, tmp_path_factory.mktemp("tiny") / "student")


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    data = Path(os.environ["MIXDISTILL_DATA"])  # conftest points it at the shared benchmark data
    if not (data / "MANIFEST.md").is_file():
        pytest.skip(f"benchmark data not found at {data} (set MIXDISTILL_TEST_DATA)")
    return data


def sample_counts(registry: Path) -> list[tuple]:
    with Registry.open(registry, read_only=True) as reg:
        return reg.query("SELECT eval_id, count(*) FROM eval_samples GROUP BY ALL ORDER BY ALL").rows()


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, tiny_student, shared_data_module):
    """One reproduction interrupted during the PoT student's training, resumed, then run once more (all done)."""
    root = tmp_path_factory.mktemp("reproduce")
    registry = root / "registry.duckdb"
    spec = load_recipe(recipe_file(root, tiny_student), ReproduceRecipe)
    calls: dict[str, list] = {"train": [], "eval": []}
    real_train, real_eval = rep.run_train, rep.run_eval

    def counting_train(recipe, *a, **kw):
        calls["train"].append(recipe.corpus.config)
        if calls.get("interrupt") and recipe.corpus.config == "pot":
            raise KeyboardInterrupt
        return real_train(recipe, *a, **kw)

    def counting_eval(recipe, *a, **kw):
        calls["eval"].append(recipe.name)
        return real_eval(recipe, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXDISTILL_HOME", str(root / "home"))
        mp.setattr(rep, "run_train", counting_train)
        mp.setattr(rep, "run_eval", counting_eval)
        calls["interrupt"] = True
        with pytest.raises(KeyboardInterrupt):
            rep.reproduce(spec, registry, shared_data_module, progress=False)
        calls["interrupt"] = False
        first = {"calls": {k: list(v) for k, v in calls.items() if k != "interrupt"},
                 "state": json.loads((root / "out" / "state.json").read_text()), "samples": sample_counts(registry)}
        calls["train"].clear(), calls["eval"].clear()
        result = rep.reproduce(spec, registry, shared_data_module, progress=False)
        second = {"calls": {k: list(v) for k, v in calls.items() if k != "interrupt"},
                  "state": json.loads((root / "out" / "state.json").read_text()), "samples": sample_counts(registry)}
        calls["train"].clear(), calls["eval"].clear()
        again = rep.reproduce(spec, registry, shared_data_module, progress=False)
        third = {"calls": {k: list(v) for k, v in calls.items() if k != "interrupt"}, "samples": sample_counts(registry)}
    return {"root": root, "registry": registry, "spec": spec, "result": result, "again": again,
            "runs": (first, second, third)}


def test_wilson_interval():
    assert [round(100 * x, 1) for x in rep.wilson(52, 200)] == [20.4, 32.5]
    assert rep.count_text(52, 200) == "52/200 (26.0%, 95% CI 20.4–32.5)"
    assert rep.wilson(0, 10)[0] == 0.0 and rep.wilson(10, 10)[1] == pytest.approx(1.0)
    lo, hi = rep.wilson(3, 7)
    assert lo < 3 / 7 < hi


def test_every_row_and_the_table_shape(reproduced):
    table = reproduced["result"].table
    assert list(table.rows) == list(rep.ROWS)
    for row, cells in table.rows.items():
        assert "".join("." if c is None else "x" for c in cells) == SHAPE[row], row
        assert all(c.n == 3 for c in cells if c is not None)
    out = reproduced["root"] / "out"
    md = (out / "table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0] == "| model | " + " | ".join(HEADS) + " |"
    body = {cells[0]: cells[1:] for line in lines[1:] if (cells := [c.strip() for c in line.split("|")[1:-1]])[0] in rep.ROWS}
    assert list(body) == list(rep.ROWS)
    for row, marks in SHAPE.items():
        cells = body[row]
        assert ["." if not c else "x" for c in cells] == list(marks), (row, cells)
        assert all("/3 (" in c and "95% CI" in c for c in cells if c)
    assert "corpus svamp-published@1.0.0" in md and "training steps 2" in md and "k=2" in md
    assert (out / "table.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "table.json").read_text())
    assert set(data["rows"]) == set(rep.ROWS) and set(data["stage_seconds"]) == {
        "corpus", "teachers", "base", "train cot", "train pot", "train mixed", "eval cot", "eval pot", "eval mixed",
        "ensemble"}
    # the rows are in `evals` with the modes each row evaluates
    with Registry.open(reproduced["registry"], read_only=True) as reg:
        evals = reg.query("SELECT json_extract_string(summary, '$.label') AS label, mode, k, n FROM evals").rows()
    modes = {}
    for label, mode, k, n in evals:
        modes.setdefault(label.split(" [")[0], set()).add((mode, k))
    assert modes[rep.COT] == {("cot", 1), ("cot", 2)} and modes[rep.POT] == {("pot", 1), ("pot", 2)}
    assert modes[rep.ENSEMBLE] == {("md", 1), ("md", 2)}
    assert modes[rep.MD] == modes[rep.BASE] == {(m, k) for m in ("cot", "pot", "md") for k in (1, 2)}


def test_ensemble_pools_the_two_students_stored_paths(reproduced):
    from mixdistill.evaluate.run import load_task
    from mixdistill.verify.rules import get_rule

    table, spec = reproduced["result"].table, reproduced["spec"]
    ens = table.rows[rep.ENSEMBLE]
    cot_k, pot_k = table.rows[rep.COT][3], table.rows[rep.POT][4]
    _, problems = load_task(spec.task, 0, Path(os.environ["MIXDISTILL_DATA"]))
    with Registry.open(reproduced["registry"], read_only=True) as reg:
        rows = reg.query("SELECT eval_id, problem_id, mode, sample_index, extracted, correct, status FROM eval_samples "
                         "WHERE eval_id IN (?, ?)", [cot_k.eval_id, pot_k.eval_id]).rows()
        summary = json.loads(reg.query("SELECT summary FROM evals WHERE eval_id = ?", [ens[5].eval_id]).item())
    assert {r[2] for r in rows if r[0] == cot_k.eval_id} == {"cot"} and {r[2] for r in rows if r[0] == pot_k.eval_id} == {"pot"}
    pooled: dict[str, list] = {}
    for _, pid, mode, index, extracted, correct, status in rows:
        pooled.setdefault(pid, []).append(StoredPath(mode, index, extracted, bool(correct), status))
    assert all(len(paths) == 4 for paths in pooled.values()) and len(pooled) == 3  # 2 CoT + 2 PoT paths each
    by_hand, _ = score(problems, pooled, get_rule("strict"), {"cot": 1.0, "pot": 1.0}, ["pot", "cot"])
    assert (ens[5].correct, ens[5].n) == (by_hand.correct, by_hand.n)
    assert summary["sample_eval_ids"] == {"cot": cot_k.eval_id, "pot": pot_k.eval_id}
    assert summary["paths"] == 12 and summary["oracle"] == by_hand.oracle


def test_an_interrupted_reproduction_resumes_without_redoing_finished_stages(reproduced):
    first, second, third = reproduced["runs"]
    assert first["calls"]["train"] == ["cot", "pot"]  # interrupted in the PoT student's training
    assert {k: v["status"] for k, v in first["state"]["stages"].items()} == {
        "corpus": "done", "teachers": "done", "base": "done", "train cot": "done", "train pot": "interrupted"}
    # the resumed run trains only what was left and keeps the earlier stages' times and samples
    assert second["calls"]["train"] == ["pot", "mixed"]
    assert not any("base" in name or "published" in name for name in second["calls"]["eval"])
    for stage in ("corpus", "teachers", "base", "train cot"):
        assert second["state"]["stages"][stage] == first["state"]["stages"][stage]
    assert set(first["samples"]) <= set(second["samples"])
    # a third run redoes nothing and reports the same table
    assert third["calls"] == {"train": [], "eval": []} and third["samples"] == second["samples"]
    assert reproduced["again"].table == reproduced["result"].table
    assert reproduced["again"].stage_seconds == reproduced["result"].stage_seconds


def test_recipe_settings_are_checked_as_the_recipes_they_become(tmp_path, tiny_student):
    from mixdistill.errors import RecipeError

    bad = recipe_file(tmp_path, tiny_student, train={"max_steps": 0})
    with pytest.raises(RecipeError, match=r"train: max_steps: Input should be greater than or equal to 1"):
        load_recipe(bad, ReproduceRecipe)
    taken = recipe_file(tmp_path, tiny_student, eval={"modes": ["cot"]})
    with pytest.raises(RecipeError, match=r"eval: modes: set by the reproduction"):
        load_recipe(taken, ReproduceRecipe)
    spec = load_recipe(recipe_file(tmp_path, tiny_student, output_dir=None), ReproduceRecipe)
    assert spec.output_dir.parts[-2:] == ("reproduce", "tiny")


def test_the_teachers_row_must_use_the_same_task_split(tmp_path, tiny_student):
    teachers = yaml.safe_load((REPO / "recipes" / "eval-published-svamp.yaml").read_text())
    teachers["tasks"] = [{"task": "svamp", "split": "full"}]
    (tmp_path / "teachers.yaml").write_text(yaml.safe_dump(teachers), encoding="utf-8")
    spec = load_recipe(recipe_file(tmp_path, tiny_student, teacher_eval=str(tmp_path / "teachers.yaml")), ReproduceRecipe)
    job = rep.Reproduction(spec, tmp_path / "r.duckdb", Path(os.environ["MIXDISTILL_DATA"]), None)
    with pytest.raises(rep.ReproduceError, match=r"teachers' row must be evaluated on svamp/test only"):
        job.teacher_recipe()


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250", **env},
                          timeout=180)


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    return lines[0]


def test_missing_student_names_fetch_demo_model(tmp_path, registry_path):
    recipe = recipe_file(tmp_path, tmp_path / "no-such-model")
    done = run_cli("reproduce", str(recipe), env={"MIXDISTILL_REGISTRY": str(registry_path),
                                                  "MIXDISTILL_HOME": str(tmp_path / "home")})
    assert done.returncode == 2
    line = one_line(done)
    assert "no-such-model does not exist" in line and "mixdistill fetch-demo-model" in line
    assert not registry_path.exists()


def test_a_corpus_without_a_rows_mode_stops_before_training(tmp_path, registry_path, shared_data_module):
    build = yaml.safe_load((REPO / "recipes" / "svamp-published.yaml").read_text())
    build.update(name="svamp-cot-only", teachers=build["teachers"][:1], modes=["cot"], samples={"cot": 1})
    build["mix"]["balance_modes"] = False
    (tmp_path / "cot-only.yaml").write_text(yaml.safe_dump(build), encoding="utf-8")
    (tmp_path / "student").mkdir()  # exists: the corpus check comes first, no model is loaded
    recipe = recipe_file(tmp_path, tmp_path / "student", corpus=str(tmp_path / "cot-only.yaml"))
    done = run_cli("--data-dir", str(shared_data_module), "reproduce", str(recipe), "--no-progress",
                   env={"MIXDISTILL_REGISTRY": str(registry_path), "MIXDISTILL_HOME": str(tmp_path / "home")})
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert "row PoT-distilled" in line and "config 'pot'" in line and "no pot rows" in line
    assert not (tmp_path / "out" / "train").exists()
