"""Run a mixdistill build as N Ray tasks, one shard each, then fold the shards together and build the corpus.

Ray is the scheduler here, nothing else: each task runs the ordinary CLI on its shard into its own registry file
(on a shared filesystem in a real cluster), and the driver merges them. Needs `pip install "mixdistill[ray]"`.

    python examples/ray_shards.py recipes/svamp-published.yaml --shards 4 --work /shared/run1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import ray

CLI = [sys.executable, "-m", "mixdistill"]


@ray.remote
def run_shard(recipe: str, index: int, count: int, registry: str) -> str:
    for step in (["generate", recipe], ["verify"]):
        subprocess.run([*CLI, "--registry", registry, *step, "--shard", f"{index}/{count}", "--no-progress"],
                       check=True)
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--work", type=Path, required=True, help="folder for shard registries and the corpus")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ray.init(address=args.address, include_dashboard=False)
    shards = ray.get([
        run_shard.remote(args.recipe, i, args.shards, str(args.work / f"shard-{i}.duckdb")) for i in range(args.shards)
    ])
    merged = str(args.work / "registry.duckdb")
    subprocess.run([*CLI, "--registry", merged, "registry", "merge", *shards], check=True)
    subprocess.run([*CLI, "--registry", merged, "build", args.recipe, "--out", str(args.work / "corpora"),
                    "--no-progress"], check=True)


if __name__ == "__main__":
    main()
