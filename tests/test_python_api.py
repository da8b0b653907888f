"""The Python API the README shows: its names are exported lazily, and its code block runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(r"<!-- python-api: .*? -->\n```python\n(.*?)```", text, re.S)[1]


def test_import_is_cheap_and_every_name_resolves():
    code = ("import sys, mixdistill; heavy = [m for m in ('polars', 'duckdb', 'datasets', 'pydantic', 'typing') "
            "if m in sys.modules]; print(heavy); print(sorted(mixdistill.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"  # nothing heavy is imported by `import mixdistill`
    import mixdistill

    for name in mixdistill.__all__:
        assert callable(getattr(mixdistill, name)), name
        assert name in readme_block() or name in {"BuildRecipe", "TrainRecipe", "EvalRecipe", "load_version"}
    import mixdistill.build  # the submodule of the same stem does not shadow the exported function

    assert mixdistill.build_corpus is mixdistill.build.build


def test_readme_python_block_runs(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    exec(compile(readme_block(), "README.md", "exec"), {"OUT": tmp_path / "corpora"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("svamp-published@1.0.0 ") and out[0].endswith(str(tmp_path / "corpora" / "svamp-published" / "1.0.0"))
    assert re.fullmatch(r"1599 verdicts, \d+ correct", out[1])
    assert out[2:] == ["svamp test cot 71.0%", "svamp test pot 84.0%", "svamp test md 84.0%"]  # README: CoT read `stated`
