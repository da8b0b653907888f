"""`mixdistill bench eval` through the console script, on the tiny random model: one row per variant, the few-shot
prompt when asked, and the JSON it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("mixdistill")


def test_bench_eval_times_each_variant_with_few_shot_prompts(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [str(BIN), "bench", "eval", "--shape", "tiny", "--problems", "4", "--k", "2", "--max-tokens", "6",
         "--batch", "2", "--threads", "1", "--variant", "generate:fp32", "--variant", "fast:fp32", "--shots", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())
    assert [(r["decoder"], r["dtype"], r["shots"]) for r in rows] == [("generate", "float32", 2), ("fast", "float32", 2)]
    assert all(r["paths"] == 8 and r["tokens"] > 0 and r["seconds"] > 0 for r in rows)
    assert "1.00x" in run.stdout and "shots" in run.stdout


def test_bench_eval_refuses_a_bad_variant_in_one_line():
    run = subprocess.run([str(BIN), "bench", "eval", "--variant", "fast:fp16"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "--variant" in run.stderr and "Traceback" not in run.stderr
