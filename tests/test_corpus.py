"""Corpus versions from a registry: register, export (Parquet + card + report), rebuild byte-identically, diff, push
to a loopback fake of the Hub."""

from __future__ import annotations

import hashlib

import datasets
import polars as pl
import pytest
import yaml

from mixdistill.corpus import (
    CorpusError, build_version, diff_versions, export_version, load_version, version_selection,
)
from mixdistill.ids import content_hash
from mixdistill.publish import push_version
from mixdistill.recipe import BuildRecipe
from mixdistill.registry import Registry
from mixdistill.registry.problems import save_problems
from mixdistill.tasks import load_problems
from fakes.hub import fake_hub

N = 60  # problems of svamp/train used


def recipe(**changes) -> BuildRecipe:
    data = {
        "name": "svamp-md", "version": "1.0.0", "description": "Test corpus.",
        "tasks": [{"task": "svamp", "split": "full"}],  # includes svamp/test: the guard must drop those
        "teachers": [{"name": "t1", "provider": "openai", "model": "gpt-test"}],
        "samples": {"cot": 2, "pot": 2},
        "mix": {"k_per_mode": 2, "validation_fraction": 0.2},
    }
    data.update(changes)
    return BuildRecipe.model_validate(data)


def fill(reg: Registry, shared_data, wrong_every: int = 4) -> None:
    """A registry as a build leaves it: problems, one teacher, 2 CoT + 2 PoT generations per problem, verdicts."""
    for split in ("full", "train", "test"):
        save_problems(reg, "svamp", split, load_problems("svamp", split, shared_data)[1])
    problems = load_problems("svamp", "train", shared_data)[1][:N]
    test_problem = load_problems("svamp", "test", shared_data)[1][0]
    reg.insert("teachers", [{"teacher_id": "tid1", "name": "t1", "provider": "openai", "model": "gpt-test"}])
    gens, verdicts = [], []
    for i, p in enumerate(problems + [test_problem]):
        gold = p.gold_text
        for mode in ("cot", "pot"):
            for s in range(2):
                key = content_hash([p.problem_id, mode, s])
                if mode == "cot":
                    text = f"Step {s}: work it out for problem {i}. The answer is {gold}."
                else:
                    text = f"```python\n# sample {s}\nans = {gold}{' + 0' * s}\n```"
                gens.append({"request_key": key, "teacher_id": "tid1", "prompt_id": f"prompt-{mode}",
                             "problem_id": p.problem_id, "mode": mode, "sample_index": s, "status": "ok",
                             "response_text": text, "cost_usd": 0.001})
                correct = (i + s) % wrong_every != 0
                verdicts.append({"request_key": key, "rule": "strict", "rule_version": "1",
                                 "extracted": gold if correct else "0", "correct": correct})
    reg.insert("generations", gens)
    reg.insert("verdicts", verdicts)


@pytest.fixture
def reg(registry_path, shared_data):
    with Registry.open(registry_path) as reg:
        fill(reg, shared_data)
        yield reg


def test_build_registers_version_with_lineage_and_stats(reg):
    version, configs = build_version(reg, recipe())
    assert version.created and version.ref == "svamp-md@1.0.0"
    mixed = configs["mixed"]
    assert set(mixed["mode"]) == {"cot", "pot"}
    assert mixed.height == configs["cot"].height + configs["pot"].height
    assert mixed["problem_id"].n_unique() <= N  # the svamp/test problem is excluded ("auto" contamination guard)
    assert version.stats["mix"]["dropped_contamination"] > 0
    assert (mixed["input"].str.starts_with("[CoT] ") | mixed["input"].str.starts_with("[PoT] ")).all()
    pot = configs["pot"]["rationale"].to_list()
    assert all(r.startswith("# sample") and "```" not in r for r in pot)  # PoT rows carry the program only
    record = load_version(reg, "svamp-md@1.0.0")
    assert record["lineage"]["sources"] == [{"task": "svamp", "source": "arkilpatel/SVAMP", "license": "MIT"}]
    assert record["lineage"]["rules"] == ["strict@1"]
    tm = {(r["teacher"], r["mode"]): r for r in record["stats"]["teacher_mode"]}
    assert tm[("t1", "cot")]["generated"] == 2 * (N + 1) == tm[("t1", "cot")]["verified"]  # + the test problem
    assert 0.6 < tm[("t1", "cot")]["pass_rate"] < 0.9
    # rebuilding the same recipe is a no-op with the same fingerprint
    again, _ = build_version(reg, recipe())
    assert not again.created and again.fingerprint == version.fingerprint
    assert reg.scalar("SELECT count(*) FROM corpora") == 1


def test_a_newer_rule_version_s_verdict_decides_what_is_kept(reg):
    """The corpus, its card's pass rates and its audit read the latest verdict of each generation (the highest rule
    version, as the audit views do): a rationale a newer rule version rejects leaves the corpus even though an
    older version accepted it, and one it accepts enters."""
    unbalanced = {"k_per_mode": 2, "validation_fraction": 0.2, "balance_modes": False}  # every correct one is kept
    first, _ = build_version(reg, recipe(mix=unbalanced))
    rows = version_selection(reg, first.ref)["mixed"]
    kept, problems = set(rows["request_key"]), set(rows["problem_id"])
    v1 = reg.query("SELECT request_key, problem_id, correct FROM verdicts JOIN generations USING (request_key)"
                   " WHERE mode = 'cot' ORDER BY request_key")
    accepted = next(k for k, _, ok in v1.rows() if ok and k in kept)
    rejected = next(k for k, p, ok in v1.rows() if not ok and p in problems)  # a training problem's
    reg.insert("verdicts", [{"request_key": accepted, "rule": "strict", "rule_version": "2", "extracted": "0",
                             "correct": False, "reason": "wrong-answer"},
                            {"request_key": rejected, "rule": "strict", "rule_version": "2", "extracted": "1",
                             "correct": True, "reason": "correct"}])
    second, configs = build_version(reg, recipe(version="1.0.1", mix=unbalanced))
    now = set(configs["mixed"]["request_key"])
    assert accepted not in now and rejected in now and now - {rejected} == kept - {accepted}
    tm = {(r["teacher"], r["mode"]): r for r in second.stats["teacher_mode"]}
    before = {(r["teacher"], r["mode"]): r for r in first.stats["teacher_mode"]}
    assert tm[("t1", "cot")]["correct"] == before[("t1", "cot")]["correct"]  # one lost, one gained
    assert sorted(second.lineage["rules"]) == ["strict@1", "strict@2"]
    with version_selection(reg, second.ref) as stored:  # rebuilt from the registry: each row once, as built
        assert stored["mixed"].sort("id").equals(configs["mixed"].sort("id"))


def test_pot_rows_carry_the_program_their_execution_ran(reg):
    """A PoT row's rationale is the program `verify` ran and stored with its execution (schema 11), not one
    extracted from the response again; a generation whose execution predates that column is extracted as before."""
    pot = reg.query("SELECT request_key, response_text FROM generations WHERE mode = 'pot' ORDER BY request_key")
    keys = pot["request_key"].to_list()
    executed = {k: f"# as executed\nans = {i}" for i, k in enumerate(keys[::2])}
    reg.insert("executions", [{"request_key": k, "sandbox_version": "2", "status": "ok", "program": program}
                              for k, program in executed.items()]
               + [{"request_key": k, "sandbox_version": "2", "status": "ok"} for k in keys[1::2]])
    _, configs = build_version(reg, recipe(mix={"k_per_mode": 2, "validation_fraction": 0.2, "balance_modes": False}))
    rows = dict(configs["pot"].select("request_key", "rationale").rows())
    responses = dict(pot.rows())
    assert rows and all(rows[k] == program for k, program in executed.items() if k in rows)
    extracted = [k for k in keys[1::2] if k in rows]
    assert extracted and all(rows[k] == responses[k].split("```python\n")[1].split("\n```")[0] for k in extracted)


def test_changed_content_needs_a_new_version(reg):
    build_version(reg, recipe())
    with pytest.raises(CorpusError, match=r"svamp-md@1.0.0 already exists with different content .* bump `version`"):
        build_version(reg, recipe(mix={"k_per_mode": 1, "validation_fraction": 0.2}))
    v2, _ = build_version(reg, recipe(version="1.1.0", mix={"k_per_mode": 1, "validation_fraction": 0.2}))
    assert load_version(reg, "svamp-md@1.1.0")["parent"] == "1.0.0"
    d = diff_versions(reg, "svamp-md@1.0.0", "svamp-md@1.1.0")
    mixed_train = next(r for r in d["rows"] if r["config"] == "mixed" and r["split"] == "train")
    assert mixed_train["removed"] > 0 and mixed_train["added"] == 0
    assert d["recipe_changes"] == {"mix.k_per_mode": (2, 1)}


def test_eval_split_as_source_and_empty_corpus_are_refused(reg):
    with pytest.raises(CorpusError, match="builds from svamp/test, the task's evaluation split"):
        build_version(reg, recipe(tasks=[{"task": "svamp", "split": "test"}]))
    with pytest.raises(CorpusError, match="no verified rationales"):
        build_version(reg, recipe(teachers=[{"name": "nobody", "provider": "openai", "model": "x"}]))
    with pytest.raises(CorpusError, match="corpus svamp-md@9.9.9 does not exist"):
        load_version(reg, "svamp-md@9.9.9")


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_is_byte_identical_and_loads_with_datasets(reg, tmp_path):
    version, configs = build_version(reg, recipe())
    a = export_version(reg, version.ref, configs, tmp_path / "a")
    with version_selection(reg, version.ref) as stored:  # from the registry alone
        b = export_version(reg, version.ref, stored, tmp_path / "b")
    parquet = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert [str(p) for p in parquet] == [
        "cot/train.parquet", "cot/validation.parquet", "mixed/train.parquet", "mixed/validation.parquet",
        "pot/train.parquet", "pot/validation.parquet", "rejected/train.parquet",
    ]
    for rel in parquet:
        assert sha(a / rel) == sha(b / rel), rel
    card = (a / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "mit" and meta["size_categories"] == ["n<1K"]
    assert {c["config_name"] for c in meta["configs"]} == {"cot", "pot", "mixed", "rejected"}
    assert 'revision="v1.0.0"' in card and "| t1 | cot |" in card and "assets/pass_rate.png" in card
    assert (a / "assets" / "pass_rate.png").read_bytes()[:4] == b"\x89PNG"
    report = (a / "report.html").read_text()
    assert "data:image/png;base64," in report and "wrong-answer" in report
    ds = datasets.load_dataset("parquet", data_files={
        "train": str(a / "mixed/train.parquet"), "validation": str(a / "mixed/validation.parquet")})
    assert ds["train"].num_rows == configs["mixed"].filter(pl.col("split") == "train").height
    assert set(ds["train"].column_names) >= {"id", "input", "rationale", "mode", "request_key", "teacher"}
    train_ids = set(ds["train"]["problem_id"])
    assert not train_ids & set(ds["validation"]["problem_id"])


def test_push_to_hub_one_commit_tagged_and_recorded(reg, monkeypatch):
    version, _ = build_version(reg, recipe())
    with fake_hub() as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        dry = push_version(reg, version.ref, "org/svamp-md", dry_run=True, endpoint=hub.endpoint)
        assert dry.commit is None and not hub.repos
        assert {p for p, _ in dry.files} >= {"README.md", "mixed/train.parquet", "assets/pass_rate.png", "report.html"}

        result = push_version(reg, version.ref, "org/svamp-md", private=True, endpoint=hub.endpoint)
        repo = hub.repos[("dataset", "org/svamp-md")]
        assert repo.private and len(repo.commits) == 1 and repo.tags == {"v1.0.0": result.commit}
        assert sorted(repo.files) == sorted(p for p, _ in dry.files)
        assert b"org/svamp-md" in repo.files["README.md"]
        assert reg.query("SELECT hub_repo, hub_revision FROM corpora").rows() == [("org/svamp-md", result.commit)]

        with pytest.raises(CorpusError, match="already has version v1.0.0"):
            push_version(reg, version.ref, "org/svamp-md", endpoint=hub.endpoint)
        assert len(repo.commits) == 1

        for stored in repo.files.values():
            assert hub.token.encode() not in stored
    assert hub.token.encode() not in reg.path.read_bytes()


def test_push_errors_before_upload(reg, monkeypatch, tmp_path):
    version, _ = build_version(reg, recipe())
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login either
    with fake_hub() as hub:
        with pytest.raises(CorpusError, match="no Hub token"):
            push_version(reg, version.ref, "org/x", endpoint=hub.endpoint)
        with pytest.raises(CorpusError, match="invalid Hub repo name 'org/bad name'"):
            push_version(reg, version.ref, "org/bad name", token=hub.token, endpoint=hub.endpoint)
        # an interrupted upload (the commit fails) leaves the Hub as it was and the registry unrecorded:
        hub.fail_next_commit = True  # a repo this push created is removed again
        with pytest.raises(CorpusError, match=r"Hub refused the push .* \(HTTP 500\)"):
            push_version(reg, version.ref, "org/x", token=hub.token, endpoint=hub.endpoint)
        assert ("dataset", "org/x") not in hub.repos
        assert reg.scalar("SELECT hub_repo FROM corpora") is None
        push_version(reg, version.ref, "org/x", token=hub.token, endpoint=hub.endpoint)  # v1.0.0 is in
        v2, _ = build_version(reg, recipe(version="2.0.0", mix={"k_per_mode": 1, "validation_fraction": 0.2}))
        hub.fail_next_commit = True  # an existing repo keeps its commits and tags
        with pytest.raises(CorpusError, match=r"HTTP 500"):
            push_version(reg, v2.ref, "org/x", token=hub.token, endpoint=hub.endpoint)
        repo = hub.repos[("dataset", "org/x")]
        assert len(repo.commits) == 1 and list(repo.tags) == ["v1.0.0"]
        with pytest.raises(CorpusError, match=r"HTTP 401"):
            push_version(reg, version.ref, "org/y", token="hf_wrong", endpoint=hub.endpoint)
        assert ("dataset", "org/y") not in hub.repos
