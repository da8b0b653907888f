"""Incremental rebuilds: a build whose inputs did not change keeps its export (no mixing, no export), and any change
to what it reads, or to the exported files, makes it mix and export again. Through the console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import mixdistill.build
import mixdistill.generate
from mixdistill.registry import Registry
from mixdistill.teachers.replay import normalize_question

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "svamp-published.yaml"
EXPORT = ("svamp-published", "1.0.0")


def _no_work(*args, **kwargs):
    raise AssertionError("an unchanged build mixed or exported")


@pytest.fixture
def built(cli, tmp_path, shared_data):
    out = tmp_path / "corpora"
    code, text, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "export kept" not in text
    return out, out.joinpath(*EXPORT)


def stamps(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_unchanged_build_keeps_the_export(cli, built, monkeypatch):
    out, export = built
    manifest = json.loads((export / "export.json").read_text())
    assert set(manifest["files"]) >= {"mixed/train.parquet", "README.md", "report.html", "rejected/train.parquet"}
    assert manifest["version"]["fingerprint"] and manifest["corpus"] == "svamp-published@1.0.0"
    assert manifest["generation_complete"] and manifest["requests"] == {"palm-540b": 800, "codex": 800}
    before = stamps(export)
    for name in ("build_version", "export_version", "run_generation"):
        monkeypatch.setattr(mixdistill.build, name, _no_work)
    monkeypatch.setattr(mixdistill.generate, "plan_generation", _no_work)
    code, text, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0, err
    assert f"corpus svamp-published@1.0.0 unchanged since {manifest['written_at']}: export kept" in text
    assert "1600 requests, 1600 cached, 0 sent" in text and "(not planned:" in text
    assert "0 new verdicts" in text and "mixed 1" in text  # the version's figures, as before
    assert stamps(export) == before


def test_a_touched_source_file_is_planned_again_and_the_export_kept(cli, built, monkeypatch, tmp_path, shared_data):
    out, export = built
    recordings = tmp_path / "codex.jsonl"  # the PoT teacher's recordings, copied: same bytes, a newer file
    spec = yaml.safe_load(RECIPE.read_text())
    codex = next(t for t in spec["teachers"] if t["name"] == "codex")
    source = Path(codex["path"].replace("${MIXDISTILL_DATA}", str(shared_data)))
    recordings.write_bytes(source.read_bytes())
    codex["path"] = str(recordings)
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(spec))
    code, text, err = cli("build", str(moved), "--out", str(out), "--no-progress")  # another recipe text: re-exported
    assert code == 0, err
    assert "(not planned:" not in text and "export kept" not in text
    code, text, err = cli("build", str(moved), "--out", str(out), "--no-progress")
    assert code == 0 and "(not planned:" in text and "export kept" in text
    recordings.touch()
    before = stamps(export)
    monkeypatch.setattr(mixdistill.build, "export_version", _no_work)
    code, text, err = cli("build", str(moved), "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "(not planned:" not in text and "0 sent" in text and "export kept" in text
    code, text, err = cli("build", str(moved), "--out", str(out), "--no-progress")
    assert code == 0 and "(not planned:" in text and "export kept" in text  # the manifest took the new stamp
    assert {k: v for k, v in stamps(export).items() if k != "export.json"} == \
        {k: v for k, v in before.items() if k != "export.json"}


def _rebuilt(cli, out: Path) -> str:
    code, text, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "export kept" not in text and "(unchanged)" in text
    return text


def test_a_new_rejected_generation_re_exports(cli, built, registry_path):
    out, export = built
    rejected = (export / "rejected" / "train.parquet").read_bytes()
    with Registry.open(registry_path) as reg:  # one more wrong answer: same corpus rows, a longer rejected file
        reg.con.execute("""
            INSERT INTO generations (request_key, teacher_id, prompt_id, problem_id, mode, sample_index, status,
                                     response_text)
            SELECT 'extra-key', teacher_id, prompt_id, problem_id, mode, 9, 'ok', 'The answer is -1.'
            FROM generations WHERE mode = 'cot' LIMIT 1
        """)
        reg.con.execute("INSERT INTO verdicts (request_key, rule, rule_version, extracted, correct, reason) "
                        "SELECT 'extra-key', rule, rule_version, '-1', false, 'wrong-answer' FROM verdicts LIMIT 1")
    assert "(not planned:" not in _rebuilt(cli, out)
    assert (export / "rejected" / "train.parquet").read_bytes() != rejected
    code, text, _ = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0 and "export kept" in text  # and then it is up to date again


def test_a_changed_verdict_is_mixed_again_and_refused_as_today(cli, built, registry_path):
    out, export = built
    with Registry.open(registry_path) as reg:
        reg.con.execute("UPDATE verdicts SET correct = false WHERE request_key = "
                        "(SELECT min(request_key) FROM corpus_rows)")
    code, _, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code != 0 and "already exists with different content" in err and "bump `version`" in err
    assert not (export / "export.json").exists()  # the refused build left no manifest that could be kept later


@pytest.mark.parametrize("damage", ["delete", "modify", "manifest"])
def test_a_damaged_export_is_written_again(cli, built, damage):
    out, export = built
    card = export / "README.md"
    original = card.read_bytes()
    if damage == "delete":
        card.unlink()
    elif damage == "modify":
        card.write_bytes(original + b"\n")
    else:
        (export / "export.json").write_text("{not json")
    text = _rebuilt(cli, out)
    assert ("(not planned:" in text) == (damage != "manifest")  # only the export is redone; without a manifest, all
    assert card.read_bytes() == original


def test_ascii_fast_path_normalises_like_the_unicode_path():
    import random
    import unicodedata

    def reference(text: str) -> str:  # the definition, character by character
        text = unicodedata.normalize("NFKC", text).casefold()
        out = [ch if not unicodedata.category(ch).startswith("P")
               or (ch in ".,/:" and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit())
               else " " for i, ch in enumerate(text)]
        return " ".join("".join(out).split())

    rng = random.Random(15)
    alphabet = [chr(c) for c in range(128)] + list("0123456789.,/:") * 4
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert normalize_question(text) == reference(text), repr(text)
    assert normalize_question("Sam has 3.5 pens, 1,000 caps. Time: 10:30!") == "sam has 3.5 pens 1,000 caps time 10:30"
