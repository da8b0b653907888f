"""`datasets` builder for mixdistill corpora.

A builder config *is* a build recipe seen from `datasets`: it names the recipe file, which corpus config (`cot`,
`pot`, `mixed`) and optionally which task to expose; the version is the recipe's. `download_and_prepare()` runs the
build (or reuses it: every step is cached in the registry) and yields the exported rows.

    from builders.mixdistill_corpus import MixdistillCorpus

    builder = MixdistillCorpus(config_name="svamp-mixed")                       # a bundled recipe
    builder = MixdistillCorpus(recipe="my.yaml", corpus_config="pot", task="gsm8k")  # any recipe
    builder.download_and_prepare()
    ds = builder.as_dataset()

Since datasets 4 the Hub no longer runs dataset scripts: a published corpus is Parquet + card (`mixdistill push`), and
consumers use `load_dataset("org/name", "mixed", revision="v1.0.0")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import yaml

from mixdistill import settings
from mixdistill.recipe import BuildRecipe, load_recipe
from mixdistill.schema import features

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

FEATURES = features()  # the export's Arrow schema, so a built and a downloaded corpus concatenate


@dataclass
class MixdistillConfig(datasets.BuilderConfig):
    """recipe: a build recipe file; corpus_config: cot | pot | mixed; task: expose one task only (None: all)."""

    recipe: str | None = None
    corpus_config: str = "mixed"
    task: str | None = None
    registry: str | None = None  # default: $MIXDISTILL_REGISTRY or the user's registry
    out: str | None = None  # export root; default: <user data dir>/corpora

    def __post_init__(self):
        # Only the recipe's name and version are read here (they name and version the config); the full validation,
        # which expands ${MIXDISTILL_DATA} and friends, waits for download_and_prepare().
        if self.recipe is None:
            raise ValueError("MixdistillConfig needs recipe=<build recipe file>")
        if self.corpus_config not in ("cot", "pot", "mixed"):
            raise ValueError(f"corpus_config must be cot, pot or mixed, not {self.corpus_config!r}")
        head = yaml.safe_load(Path(self.recipe).read_text(encoding="utf-8"))
        if self.name in (None, "default"):
            self.name = f"{self.task or head['name']}-{self.corpus_config}"
        self.version = datasets.Version(str(head.get("version", "0.1.0")))
        self.description = self.description or head.get("description", "")
        super().__post_init__()

    def load(self) -> BuildRecipe:
        spec = load_recipe(self.recipe, BuildRecipe)
        if self.task is not None and self.task not in {t.name for t in spec.tasks}:
            raise ValueError(f"task {self.task!r} is not in recipe {self.recipe}")
        return spec


def _bundled(recipe: str, task: str | None) -> list[MixdistillConfig]:
    """Configs for a recipe of the repository's recipes/ folder (absent from a wheel install: then none)."""
    path = RECIPES / recipe
    if not path.is_file():
        return []
    return [MixdistillConfig(recipe=str(path), corpus_config=c, task=task) for c in ("cot", "pot", "mixed")]


class MixdistillCorpus(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = MixdistillConfig
    BUILDER_CONFIGS = _bundled("demo.yaml", None) + _bundled("svamp-published.yaml", "svamp")
    # No default config: with one, datasets would apply a custom `recipe=` on top of it instead of building a config

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=self.config.description, features=FEATURES)

    def _split_generators(self, dl_manager):
        from mixdistill.build import build
        from mixdistill.registry import Registry

        spec = self.config.load()
        out_root = Path(self.config.out) if self.config.out else settings.default_home() / "corpora"
        with Registry.open(settings.registry_path(self.config.registry)) as reg:
            result = build(reg, spec, out_root)
        folder = result.export_dir / self.config.corpus_config
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"path": str(folder / f"{split}.parquet")})
            for split in (datasets.Split.TRAIN, datasets.Split.VALIDATION)
            if (folder / f"{split}.parquet").exists()
        ]

    def _generate_examples(self, path: str):
        table = pq.read_table(path)
        for row in table.to_pylist():
            if self.config.task is None or row["task"] == self.config.task:
                yield row["id"], row
