"""`mixdistill bench scale`: the synthetic corpus it builds, and one small run through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
import yaml

from mixdistill.cli.scale import TIMEOUTS_PER_SIZE, _slope, memory_line, rebuild_line, write_synthetic


def test_synthetic_corpus_takes_every_verification_path(tmp_path):
    recipe = yaml.safe_load(write_synthetic(tmp_path, 200, pot=True).read_text())
    assert recipe["modes"] == ["cot", "pot"]
    rows = [json.loads(line) for line in (tmp_path / "replay.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and {r["mode"] for r in rows} == {"cot", "pot"}
    programs = [r["response"] for r in rows if r["mode"] == "pot"]
    assert sum("while True" in p for p in programs) == TIMEOUTS_PER_SIZE
    assert any("/ 0" in p for p in programs) and any(p.endswith("+ 1") for p in programs)
    cots = [r["response"] for r in rows if r["mode"] == "cot"]
    assert any("depends" in c for c in cots)
    assert len((tmp_path / "task.jsonl").read_text().splitlines()) == 200
    assert _slope([10, 100], [1.0, 10.0]) == pytest.approx(1.0) and _slope([10], [1.0]) is None


def test_rebuild_ratio_is_against_the_build_stage():
    wall = {"generate": 20.0, "verify": 100.0, "build": 40.0, "rebuild (cached)": 1.0}
    assert rebuild_line(10**6, wall) == ("cached rebuild at 1,000,000: 1.0 s = 2.5% of the first build (40.0 s; "
                                         "target < 5%: met), 0.6% of generate + verify + build (160.0 s)")


def test_memory_line_is_against_the_flat_target():
    assert memory_line("build", [(10**5, 700.0), (10**6, 700.0)]) == (
        "peak RSS build: 700 MB at 100,000, 700 MB at 1,000,000 (~N^0.00); target < 2,000 MB at every size: met")
    assert memory_line("generate", [(10**6, 3966.0)]).endswith("3,966 MB at 1,000,000; target < 2,000 MB at every "
                                                             "size: NOT met")


@pytest.mark.slow
def test_bench_scale_runs_every_stage(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "mixdistill", "bench", "scale", "-n", "40", "--work",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for stage in ("generate", "verify", "build", "rebuild (cached)", "audit_pass_rate", "audit_cost"):
        assert stage in proc.stdout
    assert "cached rebuild at 40" in proc.stdout
    assert "peak RSS build: " in proc.stdout and "target < 2,000 MB at every size" in proc.stdout
    assert (tmp_path / "n40" / "corpora" / "scale" / "1.0.0" / "mixed" / "train.parquet").is_file()


def test_bench_views_builds_a_registry_that_ranks_and_times_every_view(tmp_path):
    from mixdistill.cli.scale import AUDIT_VIEWS
    from mixdistill.registry import Registry

    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(["mixdistill", "bench", "views", "-n", "2000", "--mix-export", "--work", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(f"{v}: " in proc.stdout for v in AUDIT_VIEWS)
    assert "audit views at 2,000 generations: " in proc.stdout
    assert "mix + export at 2,000 generations: " in proc.stdout
    # every correct rationale of an answered generation is a row (one sample per mode, k = 1): CoT wrong when i % 7
    # is 0, PoT when i % 11 is, no answer when i % 50 is
    answered = [i for i in range(1000) if i % 50]
    exported = {c: sum(pl.read_parquet(f).height for f in (tmp_path / "mix-export" / c).glob("*.parquet"))
                for c in ("cot", "pot", "mixed")}
    assert exported == {"cot": sum(1 for i in answered if i % 7), "pot": sum(1 for i in answered if i % 11),
                        "mixed": sum((i % 7 > 0) + (i % 11 > 0) for i in answered)}
    with Registry.open(tmp_path / "views.duckdb", read_only=True) as reg:
        assert reg.scalar("SELECT count(*) FROM generations") == 2000
        assert reg.scalar("SELECT count(*) FROM verdicts") == 2200  # a tenth of the problems judged twice
        assert reg.scalar("SELECT count(*) FROM latest_verdicts WHERE rule_version = '2'") == 2000
        assert reg.scalar("SELECT count(*) FROM audit_mode_disagreement") > 0
        assert reg.scalar("SELECT count(DISTINCT outcome) FROM audit_failures") >= 3
    bad = subprocess.run(["mixdistill", "bench", "views", "-n", "3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--generations" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_remix_mixes_the_grown_recipe_both_ways_to_the_same_rows(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(["mixdistill", "bench", "remix", "-n", "4000", "--touched", "0.2", "--work", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "a teacher added on 20% of the problems: incremental " in proc.stdout
    assert "same rows and statistics: yes" in proc.stdout
    bad = subprocess.run(["mixdistill", "bench", "remix", "--touched", "0.9"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--touched" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
