"""`mixdistill build` end to end on the PUBLISHED teacher outputs (PaLM CoT + Codex PoT replayed), and the builder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "svamp-published.yaml"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")}


def test_build_from_published_outputs_then_cache_hit(cli, tmp_path, shared_data):
    out = tmp_path / "corpora"
    code, text, err = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "palm-540b" in text and "codex" in text
    assert "0 sent, 1599 replayed" in text  # 800 PaLM CoT + 799 Codex PoT (chal-1000 was never run by the PoT authors)
    assert "corpus svamp-published@1.0.0 (new)" in text
    export = out / "svamp-published" / "1.0.0"
    first = digest(export)
    assert set(first) >= {"mixed/train.parquet", "cot/train.parquet", "pot/train.parquet"}

    mixed = pl.read_parquet(export / "mixed" / "train.parquet")
    csv = cli("sql", "SELECT teacher || '/' || mode, correct FROM audit_pass_rate", "-f", "csv")[1]
    stats = dict(line.split(",") for line in csv.splitlines()[1:])
    assert stats == {"codex/pot": "680", "palm-540b/cot": "553"}  # CoT read `stated` (the default)
    assert set(mixed["teacher"]) == {"codex", "palm-540b"}
    assert (mixed.filter(pl.col("mode") == "pot")["rationale"].str.contains("ans").all())

    # second build: nothing sent, nothing executed, same bytes
    code, text, _ = cli("build", str(RECIPE), "--out", str(out), "--no-progress")
    assert code == 0 and "0 sent" in text and "0 new verdicts" in text and "(unchanged)" in text
    assert digest(export) == first

    code, text, _ = cli("corpora")
    assert code == 0 and "svamp-published" in text and "1.0.0" in text
    code, text, _ = cli("sql", "SELECT kind, status, count(*) AS n FROM runs GROUP BY ALL ORDER BY ALL", "-f", "csv")
    # nothing left to generate or verify twice: the second build made no plan (`test_incremental.py`)
    assert text.splitlines()[1:] == ["build,done,2", "generate,done,1", "verify,done,1"]


def test_builder_yields_the_exported_rows(tmp_path, shared_data):
    from builders.mixdistill_corpus import MixdistillCorpus

    builder = MixdistillCorpus(config_name="svamp-pot", cache_dir=str(tmp_path / "hf"), out=str(tmp_path / "corpora"))
    assert str(builder.config.version) == "1.0.0" and builder.config.corpus_config == "pot"
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert set(ds) == {"train", "validation"}
    exported = pl.read_parquet(tmp_path / "corpora" / "svamp-published" / "1.0.0" / "pot" / "train.parquet")
    assert ds["train"].num_rows == exported.height
    assert ds["train"].features["mode"].dtype == "string"  # the export's type, not a ClassLabel (one schema)
    assert sorted(ds["train"]["id"]) == sorted(exported["id"])

    custom = MixdistillCorpus(recipe=str(RECIPE), corpus_config="cot", task="svamp", cache_dir=str(tmp_path / "hf"),
                              out=str(tmp_path / "corpora"))
    assert custom.config.name == "svamp-cot"
    with pytest.raises(ValueError, match="corpus_config must be cot, pot or mixed"):
        MixdistillCorpus(recipe=str(RECIPE), corpus_config="both", cache_dir=str(tmp_path / "hf"))


def test_diff_and_push_commands(cli, tmp_path, shared_data, monkeypatch):
    from fakes.hub import fake_hub

    out = str(tmp_path / "corpora")
    assert cli("build", str(RECIPE), "--out", out, "--no-progress")[0] == 0
    bumped = tmp_path / "v11.yaml"
    bumped.write_text(RECIPE.read_text().replace("version: 1.0.0", "version: 1.1.0")
                      .replace("validation_fraction: 0.05", "validation_fraction: 0.10"))
    assert cli("build", str(bumped), "--out", out, "--no-progress")[0] == 0

    code, text, _ = cli("diff", "svamp-published@1.0.0", "svamp-published@1.1.0")
    assert code == 0 and "added" in text and "removed" in text
    assert "mix.validation_fraction: 0.05 -> 0.1" in text and "mix.seed" not in text
    code, _, err = cli("diff", "svamp-published@1.0.0", "svamp-published@9.0.0")
    assert code == 2 and "corpus svamp-published@9.0.0 does not exist; versions of svamp-published: 1.0.0, 1.1.0" in err

    with fake_hub() as hub:
        code, text, _ = cli("push", "svamp-published@1.1.0", "--repo", "org/svamp", "--dry-run", "--endpoint", hub.endpoint)
        assert code == 0 and "mixed/train.parquet" in text and "would upload 13 files" in text and not hub.repos
        monkeypatch.setenv("HF_TOKEN", hub.token)
        code, text, _ = cli("push", "svamp-published@1.1.0", "--repo", "org/svamp", "--endpoint", hub.endpoint)
        assert code == 0 and "(tag v1.1.0)" in text and hub.repos[("dataset", "org/svamp")].tags
        code, _, err = cli("push", "svamp-published@1.1.0", "--repo", "org/svamp", "--endpoint", hub.endpoint)
        assert code == 2 and "already has version v1.1.0" in err
        assert hub.token not in text + err
    code, text, _ = cli("corpora")
    assert "org/svamp" in text
