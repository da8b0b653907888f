"""Flat memory without changing a byte: mixing and export in a DuckDB workspace, a bounded chunk at a time, give the
same rows, fingerprint and files whatever the chunk size; the SQL hash is the Python one."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

import mixdistill.workspace as workspace
from mixdistill.corpus import SPLITS, build_version, export_version, version_selection
from mixdistill.ids import content_hash
from mixdistill.mix import stable_hash
from mixdistill.registry import Registry
from mixdistill.workspace import Workspace, exact_chunks
from test_corpus import fill, recipe


def python_hash(salt: str, value: str) -> int:
    """The formula every released corpus was split and ranked with (first 16 hex digits of sha256 of `salt:value`)."""
    return int(hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16], 16)


def test_sql_stable_hash_is_the_python_formula():
    values = [f"k{i}" for i in range(2000)] + ["", "héllo wörld", "数学", "a'b", "x" * 500, "0" * 64]
    salts = ["rank:0", "split:3", "rank:12345", "odd'salt"]
    with Workspace() as ws:
        ws.append("v", pa.table({"value": values}))
        for salt in salts:
            got = ws.execute(f"SELECT value, {stable_hash(salt, 'value')} FROM v")
            assert {v: h for v, h in got} == {v: python_hash(salt, v) for v in values}, salt
            top = ws.scalar(f"SELECT max({stable_hash(salt, 'value')}) FROM v")
            assert 2**63 < top < 2**64  # the full unsigned 64-bit range, no sign or overflow trouble


def test_exact_chunks_cut_any_batches_to_the_same_tables():
    table = pa.table({"n": list(range(23))})
    batches = table.to_batches(max_chunksize=5)
    assert [t.num_rows for t in exact_chunks(batches, table.schema, 7)] == [7, 7, 7, 2]
    assert [t.num_rows for t in exact_chunks(iter([]), table.schema, 7)] == [0]  # no rows: one empty table
    assert pa.concat_tables(exact_chunks(batches, table.schema, 7)).equals(table)


def export(registry_path, shared_data, tmp_path, name: str):
    """Build and export the test corpus into a fresh registry; (fingerprint, stats, {file: bytes}, frames)."""
    path = tmp_path / f"{name}.duckdb"
    with Registry.open(path) as reg:
        fill(reg, shared_data)
        version, mixed = build_version(reg, recipe())
        with mixed:
            out = export_version(reg, version.ref, mixed, tmp_path / name)
            frames = {c: mixed[c] for c in ("cot", "pot", "mixed")}
        with version_selection(reg, version.ref) as stored:
            again = export_version(reg, version.ref, stored, tmp_path / f"{name}-stored")
        rows = reg.query("SELECT config, split, row_id, request_key FROM corpus_rows ORDER BY ALL")
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    stored_files = {p.relative_to(again).as_posix(): p.read_bytes() for p in sorted(again.rglob("*")) if p.is_file()}
    return version, files, stored_files, frames, rows


def without_build_time(files: dict[str, bytes]) -> dict[str, bytes]:
    """The card and the report name the registration time (its own second): everything else must be equal."""
    return {k: v for k, v in files.items() if k not in ("README.md", "report.html")}


def test_tiny_chunks_give_the_same_rows_fingerprint_and_bytes(registry_path, shared_data, tmp_path, monkeypatch):
    whole = export(registry_path, shared_data, tmp_path, "whole")
    monkeypatch.setattr(workspace, "CHUNK_ROWS", 7)  # 240 candidates and ~300 audit rows: dozens of chunks each
    # and the wide rows ordered in parts of a few dozen rows (sorted apart, appended in order)
    monkeypatch.setattr(workspace, "SORT_SHARE", 4e-5)
    copies, execute = [], workspace.Workspace.execute

    def spy(self, sql, params=None):
        copies.extend([sql] if "PARTITION_BY" in sql else [])
        return execute(self, sql, params)

    monkeypatch.setattr(workspace.Workspace, "execute", spy)
    small = export(registry_path, shared_data, tmp_path, "small")
    assert len(copies) >= 3  # rows, audit and the rebuilt rows went through parts
    (v1, files1, stored1, frames1, rows1), (v2, files2, stored2, frames2, rows2) = whole, small
    assert v1.fingerprint == v2.fingerprint and v1.stats == v2.stats and v1.lineage == v2.lineage
    assert rows1.equals(rows2) and rows1.height == sum(f.height for f in frames1.values())
    for c in frames1:
        assert frames1[c].equals(frames2[c]), c
    assert sorted(files1) == sorted(files2) and any(k.startswith("rejected/") for k in files1)
    assert without_build_time(files1) == without_build_time(files2)
    assert without_build_time(stored1) == without_build_time(files1)  # rebuilt from the registry alone
    payload = lambda html: html.split(b'id="audit-data"')[1].split(b"</script>")[0]  # noqa: E731
    assert payload(files1["report.html"]) == payload(files2["report.html"]) == payload(stored2["report.html"])
    # the streamed fingerprint is the documented formula over the whole key lists
    keys = {c: {s: sorted(frames1[c].filter(frames1[c]["split"] == s)["request_key"]) for s in SPLITS} for c in frames1}
    rules = sorted(set(frames1["mixed"]["rule"]))
    assert v1.fingerprint == content_hash({"rows": keys, "mix": recipe().mix.model_dump(mode="json"), "rules": rules}, 32)


@pytest.mark.parametrize("chunk", [1, 3])
def test_payload_is_gzip_of_the_whole_document_at_any_chunk(monkeypatch, chunk):
    """The report's data, written piece by piece, is byte for byte `gzip.compress(json, 1, mtime=0)` in base64."""
    import base64
    import gzip
    import io
    import json

    from mixdistill.cards import _payload_json, write_payload
    from mixdistill.report_bench import synthetic_audit

    audit = synthetic_audit(40)
    with Workspace() as ws:
        ws.append("audit", audit.with_row_index("_pos"))
        whole = "".join(_payload_json(ws))
        monkeypatch.setattr(workspace, "CHUNK_ROWS", chunk)
        assert "".join(_payload_json(ws)) == whole
        buf = io.StringIO()
        write_payload(ws, buf)
    doc = json.loads(whole)
    assert len(doc["rows"]["kept"]) == 40 and len(doc["problems"]["question"]) == 10
    assert doc["dicts"]["mode"] == ["cot", "pot"] and set(doc["rows"]["mode"]) == {0, 1}
    assert buf.getvalue() == base64.b64encode(gzip.compress(whole.encode(), compresslevel=1, mtime=0)).decode()


def test_workspace_takes_half_the_registry_memory_limit(monkeypatch):
    monkeypatch.setenv("MIXDISTILL_DB_MEMORY", "2GiB")
    assert workspace.memory_limit() == f"{2**30}B"
    monkeypatch.setenv("MIXDISTILL_DB_MEMORY", "1.5GB")
    with Workspace() as ws:
        assert ws.scalar("SELECT current_setting('memory_limit')") == "715.2 MiB"  # 750 * 10^6 bytes
