"""`mixdistill eval` and `mixdistill report` in-process, and the model-card results built from stored evals."""

from __future__ import annotations

import json
from pathlib import Path

from test_eval_local import _one_torch_thread  # noqa: F401  (autouse fixture)
from test_train import corpus_dir, student  # noqa: F401  (fixtures)
from test_train_cli import write_recipe

from mixdistill.evaluate.report import (
    card_results,
    comparison_table,
    latest_evals,
    model_index,
)
from mixdistill.registry import Registry

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_eval_then_report(cli, shared_data, tmp_path):
    code, out, err = cli("eval", str(RECIPES / "eval-published-svamp.yaml"), "--limit", "40")
    assert code == 0, err
    assert "MD vote" in out and "generated 80 paths" in out
    # the recordings cover all 1000 SVAMP problems; 40 are evaluated: the rest are counted and shown, never silent
    assert "recordings.pot: 959 recorded questions match no problem of svamp/test (first:" in out, out
    code, out, err = cli("report", "--out", str(tmp_path / "rep"))
    assert code == 0, err
    md = (tmp_path / "rep" / "eval_report.md").read_text()
    assert "| model | mode | svamp/test (n=40) |" in md
    assert "Answer rule (its version names the CoT reading, `stated` or `expression`): `strict@2+cot-stated`" in md
    assert "| PaLM-540B CoT + Codex PoT (published) | MD vote |" in md
    assert (tmp_path / "rep" / "eval_report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_evals(cli, registry_path, tmp_path):
    with Registry.open(registry_path):
        pass
    code, _, err = cli("report", "--out", str(tmp_path))
    assert code == 2 and "no evaluations" in err


def test_bad_recipe_is_one_line_per_problem(cli, tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("kind: eval\nname: e\nmodel: m\ntasks: [{task: svamp}]\nk: 4\nsampling: {temperature: 0}\n")
    code, _, err = cli("eval", str(path))
    assert code == 2 and "e.yaml: (top level): sampling.temperature: k > 1 needs a temperature > 0" in err
    path.write_text("kind: eval\nname: e\nmodel: m\ntasks: [{task: svamp}]\ntie_break: [pot]\n")
    code, _, err = cli("eval", str(path))
    assert code == 2 and "tie_break: list both modes once" in err


def _evals(reg: Registry, rows: list[tuple]) -> None:
    reg.insert("evals", [
        {"eval_id": eid, "model": model, "task": task, "split": "test", "mode": mode, "k": k, "rule": "strict",
         "n": 200, "correct": round(acc * 200), "accuracy": acc, "summary": json.dumps({"label": label})}
        for eid, model, label, task, mode, k, acc in rows
    ])


def test_table_and_model_index(registry_path):
    with Registry.open(registry_path) as reg:
        _evals(reg, [("a", "m1", "student", "svamp", "cot", 1, 0.70), ("b", "m1", "student", "svamp", "pot", 1, 0.80),
                     ("c", "m1", "student", "gsm8k", "md", 10, 0.50), ("d", "gpt", "GPT-3.5", "svamp", "cot", 1, 0.82)])
        reg.con.execute("UPDATE evals SET created_at = created_at - INTERVAL 1 DAY")
        _evals(reg, [("b2", "m1", "student", "svamp", "pot", 1, 0.85)])  # a newer run of the same eval wins
        table = comparison_table(latest_evals(reg))
        results = card_results(reg, ["m1"])
    assert table.columns == ["gsm8k/test", "svamp/test"]
    assert table.rows == [("GPT-3.5", "CoT", [None, 0.82]), ("student", "CoT", [None, 0.70]),
                          ("student", "PoT", [None, 0.85]), ("student", "MD vote k=10", [0.50, None])]
    assert [(r["task"], r["mode_label"], r["accuracy"]) for r in results] == [
        ("gsm8k", "MD vote k=10", 0.5), ("svamp", "CoT", 0.7), ("svamp", "PoT", 0.85)]
    index = model_index("tiny-md", results)
    assert index[0]["name"] == "tiny-md"
    svamp = next(r for r in index[0]["results"] if r["dataset"]["name"] == "svamp")
    assert svamp["dataset"] == {"name": "svamp", "type": "svamp", "split": "test"}
    assert [(m["type"], m["value"]) for m in svamp["metrics"]] == [("accuracy", 0.7), ("accuracy", 0.85)]


def test_trained_adapter_eval_reaches_the_model_card(cli, student, corpus_dir, tmp_path, registry_path):  # noqa: F811
    """train -> eval (the adapter prompted with its training template) -> the push-adapter card's results."""
    import yaml

    from mixdistill.train.publish import eval_results, render_card

    recipe = write_recipe(tmp_path, student, {"parquet": str(corpus_dir)}, max_steps=1, save_steps=1,
                          prompt_template="Q: {input}\nA:")
    code, _, err = cli("train", str(recipe))
    assert code == 0, err
    with Registry.open(registry_path, read_only=True) as reg:
        model_id, adapter = reg.query("SELECT model_id, adapter_path FROM models").row(0)
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"q": "Tom has 3 apples and buys 4 more. How many apples?", "a": 7}))
    ev = tmp_path / "eval.yaml"
    ev.write_text(yaml.safe_dump({
        "kind": "eval", "name": "tiny-md", "model": str(student), "adapter": adapter, "k": 1,
        "sampling": {"max_tokens": 8}, "tasks": [{"custom": {"name": "t", "path": str(task), "question": "q", "answer": "a"}}],
    }))
    code, _, err = cli("eval", str(ev))
    assert code == 0, err
    with Registry.open(registry_path, read_only=True) as reg:
        stored = reg.query("SELECT DISTINCT e.model, s.input FROM evals e JOIN eval_samples s USING (eval_id) "
                           "WHERE s.mode = 'cot'").to_dicts()
    assert stored == [{"model": model_id, "input": "Q: [CoT] Tom has 3 apples and buys 4 more. How many apples?\nA:"}]
    results = eval_results(registry_path, [model_id])
    assert sorted(r["mode_label"] for r in results) == ["CoT", "MD vote", "PoT"]
    card = render_card(json.loads((Path(adapter) / "training_info.json").read_text()), "org/tiny-md", results)
    meta = yaml.safe_load(card.split("---")[1])
    assert {m["name"] for r in meta["model-index"][0]["results"] for m in r["metrics"]} == {
        "accuracy (CoT, n=1)", "accuracy (PoT, n=1)", "accuracy (MD vote, n=1)"}


def test_report_states_each_rows_n_ties_and_distinct_colours(registry_path, tmp_path):
    """Rows of one column evaluated on different numbers of problems each say their own n; vote rows say how many
    problems the tie-break decided; more than 10 bars get as many colours."""
    from mixdistill.evaluate.report import bar_colours, plot_png, write_report

    with Registry.open(registry_path) as reg:
        reg.insert("evals", [
            {"eval_id": "x1", "model": "m1", "task": "svamp", "split": "test", "mode": "md", "k": 1, "rule": "strict",
             "n": 50, "correct": 13, "accuracy": 0.26, "summary": json.dumps({"label": "md", "ties": 41, "ties_lost": 7})},
            {"eval_id": "x2", "model": "m2", "task": "svamp", "split": "test", "mode": "cot", "k": 1, "rule": "strict",
             "n": 30, "correct": 3, "accuracy": 0.1, "summary": json.dumps({"label": "base", "ties": 0, "ties_lost": 0})},
        ])
        table = comparison_table(latest_evals(reg))
    assert table.header() == ["svamp/test"]  # the rows differ: no n in the header
    md = table.markdown()
    assert "| base | CoT | 10.0 (n=30) |" in md and "| md | MD vote | 26.0 (n=50) |" in md
    assert "| md | MD vote | 41 of 50, 7 passing over a right answer |" in md
    assert "| base | CoT | 0" not in md.split("tie-break decided")[1]  # rows without ties are left out there
    written, _ = write_report(table, tmp_path)
    assert "26.0 (n=50)" in written.read_text()

    assert [table.row_n(i) for i in range(2)] == ["30", "50"]  # the plot legend names each row's n
    colours = bar_colours(13)
    assert len(set(colours)) == 13
    assert len(set(bar_colours(20))) == 20 and len(set(bar_colours(4))) == 4
    assert plot_png(table)[:4] == b"\x89PNG"
