"""A build split into shards (`generate/verify --shard I/N`, one registry each) and folded back with
`mixdistill registry merge`: the merged registry exports the same corpus bytes as a single-machine build."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from mixdistill.errors import MixdistillError
from mixdistill.shard import Shard, shard_of

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "svamp-published.yaml"
CONSOLE = [sys.executable, "-m", "mixdistill"]


def mixdistill(*args: str, registry: Path, wait: bool = True):
    env = {**os.environ, "MIXDISTILL_REGISTRY": str(registry), "COLUMNS": "250"}
    cmd = [*CONSOLE, *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shard_spec_parses_and_partitions():
    assert Shard.parse("2/8") == Shard(2, 8) and str(Shard.parse(" 0 / 1 ")) == "0/1"
    for bad, says in [("3/2", "below N"), ("0/0", "at least 1"), ("1", "expected I/N"), ("-1/2", "expected I/N")]:
        with pytest.raises(MixdistillError, match=says):
            Shard.parse(bad)
    ids = [f"{i:016x}" for i in range(4000)]
    shards = [Shard(i, 4) for i in range(4)]
    owners = [[s.holds(p) for s in shards].count(True) for p in ids]
    assert owners == [1] * len(ids)  # every problem in exactly one shard
    sizes = [sum(shard_of(p, 4) == i for p in ids) for i in range(4)]
    assert min(sizes) > 900  # and the shards are balanced
    assert shard_of("abc", 7) == shard_of("abc", 7)


def test_bad_shard_spec_is_one_line_and_touches_nothing(tmp_path, shared_data):
    reg = tmp_path / "r.duckdb"
    for spec in ("3/2", "0/0", "x"):
        proc = mixdistill("generate", str(RECIPE), "--shard", spec, "--no-progress", registry=reg)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "--shard" in proc.stderr
    assert not reg.exists()


def small_recipe(tmp_path: Path, problems: int = 150) -> Path:
    """svamp-published on its first `problems` training problems (its paths are all ${MIXDISTILL_DATA}-based)."""
    spec = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    spec["tasks"][0]["limit"] = problems
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sharded_build_merges_to_the_single_machine_corpus(tmp_path, shared_data):
    recipe = small_recipe(tmp_path)
    single = tmp_path / "single.duckdb"
    proc = mixdistill("build", str(recipe), "--out", str(tmp_path / "one"), "--no-progress", registry=single)
    assert proc.returncode == 0, proc.stderr
    expected = digest(tmp_path / "one" / "svamp-published" / "1.0.0")
    assert expected

    # three "machines": each generates and verifies its shard into its own registry, concurrently
    shards = [tmp_path / f"shard{i}.duckdb" for i in range(3)]
    procs = [
        mixdistill("generate", str(recipe), "--shard", f"{i}/3", "--no-progress", registry=s, wait=False)
        for i, s in enumerate(shards)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    for i, s in enumerate(shards):
        proc = mixdistill("verify", "--shard", f"{i}/3", "--no-progress", registry=s)
        assert proc.returncode == 0, proc.stderr
    counts = [duckdb.connect(str(s), read_only=True).execute("SELECT count(*) FROM generations").fetchone()[0]
              for s in shards]
    total = duckdb.connect(str(single), read_only=True).execute("SELECT count(*) FROM generations").fetchone()[0]
    assert all(c > 0 for c in counts) and sum(counts) == total  # disjoint shards covering every request

    merged = tmp_path / "merged.duckdb"
    proc = mixdistill("registry", "merge", *map(str, shards), registry=merged)
    assert proc.returncode == 0, proc.stderr
    proc = mixdistill("registry", "merge", *map(str, shards), registry=merged)  # idempotent
    assert proc.returncode == 0 and proc.stdout.count("0 rows added") == 3, proc.stdout
    con = duckdb.connect(str(merged), read_only=True)
    assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == total
    assert con.execute("SELECT count(*) FROM verdicts").fetchone()[0] == total
    con.close()

    proc = mixdistill("build", str(recipe), "--out", str(tmp_path / "merged-out"), "--no-progress", registry=merged)
    assert proc.returncode == 0, proc.stderr
    assert "0 sent" in proc.stdout and "0 new verdicts" in proc.stdout  # the shards did all the work
    assert digest(tmp_path / "merged-out" / "svamp-published" / "1.0.0") == expected


def _tiny_registry(path: Path, response: str = "The answer is 5.", recipe: str = "{}", shard_count: int = 2) -> Path:
    from mixdistill.registry import Registry

    with Registry.open(path) as reg:
        reg.insert("generations", [{
            "request_key": "k1", "teacher_id": "t", "prompt_id": "p", "problem_id": "q", "mode": "cot",
            "sample_index": 0, "status": "ok", "response_text": response, "run_id": f"run-{path.stem}",
            "latency_s": 0.5 if "a" in path.stem else 0.7,
        }])
        reg.insert("runs", [{"run_id": f"g-{path.stem}", "kind": "generate", "name": f"b shard 0/{shard_count}",
                             "recipe": recipe, "status": "done"}])
    return path


def test_merge_refusals_leave_the_target_unchanged(tmp_path, cli):
    a = _tiny_registry(tmp_path / "a.duckdb")
    same = _tiny_registry(tmp_path / "same.duckdb")  # same content, other run id and latency: not a conflict
    clash = _tiny_registry(tmp_path / "clash.duckdb", response="The answer is 6.")
    other = _tiny_registry(tmp_path / "other.duckdb", recipe='{"name": "other"}')
    resharded = _tiny_registry(tmp_path / "resharded.duckdb", shard_count=3)
    target = tmp_path / "target.duckdb"

    proc = mixdistill("registry", "merge", str(a), str(same), registry=target)
    assert proc.returncode == 0, proc.stderr
    assert "generations 1" in proc.stdout and "0 rows added" not in proc.stdout.splitlines()[0]
    frozen = file_digest(target)

    cases = [
        ([str(clash)], "request_key='k1'"),
        ([str(other)], "different builds (different recipes)"),
        ([str(resharded)], "different builds (different shard counts 2/3)"),
        ([str(tmp_path / "missing.duckdb")], "no registry at"),
        ([str(target)], "is the target registry itself"),
    ]
    older = tmp_path / "older.duckdb"
    _tiny_registry(older)
    con = duckdb.connect(str(older))
    con.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
    con.close()
    cases.append(([str(older)], "schema version"))
    for i, (args, says) in enumerate(cases):
        if i == 0:  # through the real console script once; the rest in-process through the same main()
            proc = mixdistill("registry", "merge", *args, registry=target)
            code, err = proc.returncode, proc.stderr
        else:
            code, _, err = cli("--registry", str(target), "registry", "merge", *args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and says in err, err
        assert file_digest(target) == frozen, args
    fresh = tmp_path / "fresh.duckdb"  # a target that does not exist yet is not created for a shard that is missing
    code, _, err = cli("--registry", str(fresh), "registry", "merge", str(tmp_path / "missing.duckdb"))
    assert code == 2 and "no registry at" in err and not fresh.exists(), err


@pytest.mark.slow
def test_ray_example_builds_the_same_corpus(tmp_path, shared_data):
    """examples/ray_shards.py on a local single-node Ray cluster: the corpus equals a single-machine build's."""
    pytest.importorskip("ray", reason="ray is an optional extra (pip install 'mixdistill[ray]')")
    recipe = small_recipe(tmp_path, problems=40)
    single = tmp_path / "single.duckdb"
    proc = mixdistill("build", str(recipe), "--out", str(tmp_path / "one"), "--no-progress", registry=single)
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # no token file, no telemetry
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "ray_shards.py"), str(recipe), "--shards", "2",
                           "--work", str(tmp_path / "ray")], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digest(tmp_path / "ray" / "corpora" / "svamp-published" / "1.0.0") == \
        digest(tmp_path / "one" / "svamp-published" / "1.0.0")


def test_a_merge_killed_mid_way_leaves_the_target_as_it_was(tmp_path):
    """kill -9 while the shard's rows are being copied: the next open finds the target as it was before the merge
    (one transaction per shard), and merging again then completes."""
    import signal
    import time

    from mixdistill.registry import Registry

    small = _tiny_registry(tmp_path / "a.duckdb")
    big = tmp_path / "big.duckdb"
    with Registry.open(big) as reg:
        reg.con.execute(
            "INSERT INTO generations (request_key, teacher_id, prompt_id, problem_id, mode, sample_index, status,"
            " response_text, run_id) SELECT 'big-' || i, 't', 'p', 'q' || i, 'cot', 0, 'ok',"
            " 'The answer is ' || i || '. ' || repeat('x', 200), 'r' FROM range(400000) t(i)")
        reg.insert("runs", [{"run_id": "g-big", "kind": "generate", "name": "b shard 1/2", "recipe": "{}",
                             "status": "done"}])
    target = tmp_path / "target.duckdb"
    assert mixdistill("registry", "merge", str(small), registry=target).returncode == 0

    def content() -> tuple:
        with Registry.open(target, read_only=True) as reg:
            return reg.con.execute("SELECT count(*), sum(hash(request_key, response_text)) FROM generations").fetchone()

    before = content()
    proc = mixdistill("registry", "merge", str(big), registry=target, wait=False)
    wal, size = target.with_name(target.name + ".wal"), target.stat().st_size

    def written() -> int:
        return target.stat().st_size - size + (wal.stat().st_size if wal.exists() else 0)

    deadline = time.monotonic() + 120
    while written() < 4 << 20:  # DuckDB is copying the shard's rows (~90 MB of them) into the target
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the merge ended (or stalled) before it could be killed: {proc.communicate()[1]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert content() == before
    done = mixdistill("registry", "merge", str(big), registry=target)
    assert done.returncode == 0, done.stderr
    assert content()[0] == before[0] + 400_000
