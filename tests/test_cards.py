"""What a published corpus says about itself: provenance, licenses and citations on the card, the recipe in the
export, one schema for the builder and the Parquet, rejected rationales exported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import duckdb
import pytest
import yaml

from mixdistill.licenses import LicenseError, derive

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "svamp-published.yaml"


def test_license_is_the_most_restrictive_or_other_with_a_reason():
    assert derive([("SVAMP", "MIT"), ("PoT", "MIT")]).id == "mit"
    assert derive([("SVAMP", "MIT"), ("DSS", "Apache-2.0")]).id == "apache-2.0"
    nc = derive([("SVAMP", "MIT"), ("ASDiv", "CC-BY-NC-4.0"), ("DSS", "Apache-2.0")])
    assert nc.id == "cc-by-nc-4.0" and "Non-commercial" in nc.note and "ASDiv" in nc.note
    clash = derive([("A", "CC-BY-SA-4.0"), ("B", "CC-BY-NC-4.0")])
    assert clash.id == "other" and "share-alike and non-commercial" in clash.note
    peers = derive([("A", "Apache-2.0"), ("B", "CC-BY-4.0")])
    assert peers.id == "other" and "same strength" in peers.note
    with pytest.raises(LicenseError, match="source my-file: license 'unknown' is not one mixdistill can put on a card"):
        derive([("SVAMP", "MIT"), ("my-file", "unknown")])


@pytest.fixture
def published(cli, tmp_path, shared_data):
    out = tmp_path / "corpora"
    code, _, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0, err
    return out, out / "svamp-published" / "1.0.0"


def test_svamp_published_card_is_true(published, tmp_path):
    from huggingface_hub import DatasetCard
    from datasets.utils.metadata import MetadataConfigs

    _, export = published
    card_text = (export / "README.md").read_text()
    card = DatasetCard.load(export / "README.md")  # huggingface_hub parses and types the metadata
    assert card.data.license == "apache-2.0"  # SVAMP MIT + PoT outputs MIT + DSS PaLM outputs Apache-2.0
    configs = MetadataConfigs.from_dataset_card_data(card.data)  # what `datasets` reads from a Hub card
    assert set(configs) == {"cot", "pot", "mixed", "rejected"} and configs["mixed"].get("default")
    assert not configs["rejected"].get("default")

    # both teacher-output sources, with repository, commit and license
    assert "cnalty/distilling-step-by-step-rag" in card_text and "1a3053c0b6587fd4f2fa02edad115c41bdf7eeda" in card_text
    assert "wenhuchen/Program-of-Thoughts" in card_text and "850399c3eff8c37458a9d642c4a98df287f50f3a" in card_text
    rows = {line.split("|")[1].strip(): line for line in card_text.splitlines() if "| teacher outputs |" in line}
    assert "Apache-2.0" in rows["distilling-step-by-step: PaLM-540B CoT completions for SVAMP"]
    assert "| MIT |" in rows["Program-of-Thoughts: Codex PoT programs"]
    # replayed teachers are not said to have been asked with mixdistill's prompts
    assert card_text.count("replayed, not asked") == 2 and "asked by mixdistill" not in card_text
    # citations: the method, the benchmark, both output sources
    for key in ("@article{li2023mixed", "@inproceedings{patel-etal-2021-nlp", "@inproceedings{hsieh-etal-2023-distilling",
                "@article{chen2023program"):
        assert key in card_text
    assert "OpenAI's own terms" in card_text and "Google's own terms" in card_text
    # the recipe is in the export and on the card, without this machine's data path
    recipe = yaml.safe_load((export / "recipe.yaml").read_text())
    assert recipe["name"] == "svamp-published" and recipe["teachers"][1]["path"].startswith("${MIXDISTILL_DATA}/")
    assert "```yaml" in card_text and "path: ${MIXDISTILL_DATA}/program-of-thoughts/outputs/" in card_text
    assert os.environ["MIXDISTILL_DATA"] not in card_text + (export / "recipe.yaml").read_text()
    one_schema_and_rejected_rows(published, tmp_path)


def one_schema_and_rejected_rows(published, tmp_path):
    """The builder and the export share one schema; rejected rows are queryable (same build as the card test)."""
    from builders.mixdistill_corpus import MixdistillCorpus

    out, export = published
    builder = MixdistillCorpus(config_name="svamp-mixed", cache_dir=str(tmp_path / "hf"), out=str(out))
    builder.download_and_prepare()
    built = builder.as_dataset(split="train")
    downloaded = datasets.load_dataset(str(export), "mixed", split="train")  # the export as a Hub repo is read
    assert built.features == downloaded.features
    both = datasets.concatenate_datasets([built, downloaded])
    assert both.num_rows == 2 * downloaded.num_rows and set(both["mode"]) == {"cot", "pot"}

    rejected = datasets.load_dataset(str(export), "rejected")
    assert set(rejected) == {"train", "validation"}
    con = duckdb.connect()
    reasons = dict(con.execute(
        f"SELECT reason, count(*) FROM read_parquet('{export}/rejected/*.parquet') GROUP BY ALL").fetchall())
    assert reasons["wrong-answer"] > 0 and "kept" not in reasons
    kept = con.execute(f"SELECT count(*) FROM read_parquet('{export}/mixed/*.parquet')").fetchone()[0]
    # every rationale of the scope is either kept or rejected: 800 PaLM CoT + 799 Codex PoT
    assert kept + sum(reasons.values()) == 1599
    overlap = con.execute(
        f"SELECT count(*) FROM read_parquet('{export}/rejected/*.parquet') r "
        f"JOIN read_parquet('{export}/mixed/*.parquet') m USING (request_key)").fetchone()[0]
    assert overlap == 0


def test_unknown_license_is_a_clear_build_error(tmp_path, shared_data):
    recorded = tmp_path / "mine.jsonl"  # the published PoT programs, one byte changed: no longer that source
    published = shared_data / "program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl"
    recorded.write_bytes(published.read_bytes() + b"\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.read_text().replace(
        "${MIXDISTILL_DATA}/program-of-thoughts/outputs/svamp_s0_e-1_11_24_14_38.jsonl", str(recorded)))
    registry = tmp_path / "reg.duckdb"
    env = {**os.environ, "MIXDISTILL_REGISTRY": str(registry), "MIXDISTILL_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-m", "mixdistill", "build", str(recipe), "--no-progress"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "teacher 'codex': replayed file mine.jsonl is not a known published source" in lines[0]
    assert "give the teacher `license:`" in lines[0]
    assert not (tmp_path / "home" / "corpora").exists()
    if registry.exists():  # nothing was generated
        con = duckdb.connect(str(registry), read_only=True)
        assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == 0


def test_custom_task_without_a_license_stops_the_build(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"q": "1 + 1?", "a": 2}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: mine\ntasks:\n  - custom: {name: mine, path: p.jsonl, question: q, answer: a}\n"
        "teachers:\n  - {provider: openai, model: gpt-4o-mini}\n")
    env = {**os.environ, "MIXDISTILL_REGISTRY": str(tmp_path / "reg.duckdb"), "OPENAI_API_KEY": "sk-test"}
    run = subprocess.run([sys.executable, "-m", "mixdistill", "build", str(recipe), "--no-progress"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "source custom task 'mine'" in lines[0] and "license 'unknown'" in lines[0]
    if (tmp_path / "reg.duckdb").exists():
        con = duckdb.connect(str(tmp_path / "reg.duckdb"), read_only=True)
        assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == 0
