"""Training data: a corpus version -> multi-task examples -> token ids with the loss masked to the rationale.

A corpus comes from one of three places (`CorpusRef`): a registry corpus `name@version` (its rows rebuilt from the
registry, or read from its Parquet export and checked row for row against `corpus_rows`), a local Parquet export,
or a Hub dataset id + revision. Every row is one rationale; its `input` already carries the mode prefix (`[CoT] ...`), so
mixing modes in one dataset *is* the multi-task setup. Rows longer than `max_length` are counted and dropped (or
stop the run): cutting a rationale mid-answer would teach the student to stop without an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mixdistill.errors import MixdistillError
from mixdistill.recipe import CorpusRef, TrainRecipe
from mixdistill.student import format_prompt, prompt_ids
from mixdistill.train.loss import IGNORE

MODES = ("cot", "pot")
REQUIRED_COLUMNS = ("id", "mode", "input", "rationale")


class TrainError(MixdistillError):
    """Training cannot start or continue (bad corpus, tokenizer, device setting...)."""


@dataclass
class LoadedCorpus:
    train: datasets.Dataset
    eval: datasets.Dataset | None
    corpus_id: str | None  # registry id when the corpus came from the registry
    label: str  # name@version, hub@revision or path: lineage for runs, models and cards
    hub: str | None = None  # Hub dataset the rows come from (or where the registry corpus was pushed)
    revision: str | None = None  # its revision


@dataclass
class LengthReport:
    """Rows left out because prompt + rationale exceed max_length, per mode."""

    max_length: int
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def message(self, split: str) -> str:
        if not self.total_dropped:
            return f"{split}: {self.kept} examples, none longer than max_length {self.max_length}"
        per_mode = ", ".join(f"{m} {n}" for m, n in sorted(self.dropped.items()))
        return (
            f"{split}: {self.total_dropped} of {self.kept + self.total_dropped} rows ({per_mode}) are longer than "
            f"max_length {self.max_length} tokens and were left out (raise max_length to keep them)"
        )


# ------------------------------------------------------------------------------------------------ loading
def load_corpus(ref: CorpusRef, recipe: TrainRecipe, registry_path: Path | None) -> LoadedCorpus:
    """Load the train (and optional eval) split of the corpus a recipe names."""
    corpus_id, hub, revision = None, ref.hub, ref.revision
    if ref.name is not None:
        corpus_id, frames, hub, revision = _from_registry(ref, registry_path)
        if frames is None:
            reader = lambda split: _read_parquet(ref.parquet, ref.config, split)  # noqa: E731
        else:
            reader = lambda split: _from_frame(frames[ref.config], split)  # noqa: E731
    elif ref.hub is not None:
        reader = lambda split: _read_hub(ref.hub, ref.config, split, ref.revision)  # noqa: E731
    else:
        reader = lambda split: _read_parquet(ref.parquet, ref.config, split)  # noqa: E731

    train = reader(recipe.train_split)
    if train is None:
        raise TrainError(f"corpus {ref.label}: no split {recipe.train_split!r} in config {ref.config!r} (train_split)")
    evals = reader(recipe.eval_split) if recipe.eval_split else None
    for split, ds in ((recipe.train_split, train), (recipe.eval_split, evals)):
        if ds is not None:
            _check_columns(ds, f"{ref.label} [{ref.config}/{split}]")
            if corpus_id is not None and ref.parquet is not None:
                _check_rows(registry_path, corpus_id, ref, split, ds)
    return LoadedCorpus(train=train, eval=evals, corpus_id=corpus_id, label=ref.label, hub=hub, revision=revision)


def _from_registry(ref: CorpusRef, registry_path: Path | None):
    """name@version -> (corpus_id, rows per config, hub repo, hub revision): rows rebuilt from the registry alone,
    unless the recipe names the Parquet export to read (then its rows are checked against `corpus_rows`)."""
    from mixdistill.corpus import load_version, version_frames
    from mixdistill.registry import Registry

    if registry_path is None or not Path(registry_path).exists():
        raise TrainError(f"corpus {ref.label}: no registry at {registry_path} (corpus.name needs a registry)")
    with Registry.open(registry_path, read_only=True) as reg:
        record = load_version(reg, ref.label)  # a CorpusError naming the known versions if it does not exist
        frames = None if ref.parquet is not None else version_frames(reg, ref.label)
    return record["corpus_id"], frames, record.get("hub_repo"), record.get("hub_revision")


def _from_frame(frame, split: str) -> datasets.Dataset | None:
    import polars as pl

    part = frame.filter(pl.col("split") == split).drop("split")
    return datasets.Dataset.from_polars(part) if part.height else None


def _read_parquet(path: Path, config: str, split: str) -> datasets.Dataset | None:
    """A Parquet file (used for the train split only), or an export folder laid out `<config>/<split>*.parquet`."""
    path = Path(path)
    if path.is_file():
        return _load(lambda: datasets.load_dataset("parquet", data_files=str(path), split="train"), path) if split == "train" else None
    if not path.is_dir():
        raise TrainError(f"corpus.parquet: {path} does not exist")
    for pattern in (f"{config}/{split}-*.parquet", f"{config}/{split}.parquet", f"data/{config}/{split}-*.parquet",
                    f"{config}/{split}/*.parquet", f"{config}-{split}*.parquet"):
        files = sorted(path.glob(pattern))
        if files:
            return _load(lambda: datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train"), path)
    if (path / "README.md").is_file():  # a Hub-style folder whose card declares its configs
        try:
            return datasets.load_dataset(str(path), config, split=split)
        except (ValueError, FileNotFoundError):
            return None
    return None


def _read_hub(repo: str, config: str, split: str, revision: str | None) -> datasets.Dataset | None:
    try:
        return datasets.load_dataset(repo, config, split=split, revision=revision)
    except ValueError as e:  # unknown split
        if "split" in str(e).lower():
            return None
        raise TrainError(f"corpus.hub {repo}@{revision or 'main'}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # network, missing repo or revision: one line, never a token
        raise TrainError(f"corpus.hub {repo}@{revision or 'main'} cannot be loaded: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None


def _load(fn, path: Path) -> datasets.Dataset:
    try:
        return fn()
    except Exception as e:
        raise TrainError(f"corpus.parquet: cannot read {path}: {str(e).splitlines()[0]}") from None


def _check_columns(ds: datasets.Dataset, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise TrainError(f"corpus {where}: missing column(s) {', '.join(missing)}")
    bad = sorted(set(ds.unique("mode")) - set(MODES))
    if bad:
        raise TrainError(f"corpus {where}: column mode has unknown value(s) {bad}; expected cot or pot")


def _check_rows(registry_path: Path, corpus_id: str, ref: CorpusRef, split: str, ds: datasets.Dataset) -> None:
    """The export must hold exactly the rows the registry says this corpus version has."""
    from mixdistill.registry import Registry

    with Registry.open(registry_path, read_only=True) as reg:
        expected = reg.query(
            "SELECT row_id FROM corpus_rows WHERE corpus_id = ? AND config = ? AND split = ?", [corpus_id, ref.config, split]
        )["row_id"].to_list()
    if expected and sorted(expected) != sorted(ds["id"]):
        raise TrainError(
            f"corpus {ref.label} [{ref.config}/{split}]: the export has {ds.num_rows} rows but the registry lists "
            f"{len(expected)} other or different ones; re-export it (corpus.parquet)"
        )


# ------------------------------------------------------------------------------------------------ selection
def select_rows(ds: datasets.Dataset, recipe: TrainRecipe) -> datasets.Dataset:
    """Apply `limit` and `mode_mix` (down-sample the modes above their share; seeded, so reruns see the same rows)."""
    if recipe.limit is not None:
        ds = ds.select(range(min(recipe.limit, ds.num_rows)))
    if recipe.mode_mix is None:
        return ds
    modes = np.asarray(ds["mode"])
    share = {m: recipe.mode_mix.get(m, 0.0) for m in MODES}
    counts = {m: int((modes == m).sum()) for m in MODES}
    total = sum(share.values())
    scale = min(counts[m] / (share[m] / total) for m in MODES if share[m] > 0)
    rng = np.random.default_rng(recipe.seed)
    keep = []
    for m in MODES:
        idx = np.flatnonzero(modes == m)
        n = min(len(idx), int(scale * share[m] / total))
        keep.extend(sorted(rng.choice(idx, size=n, replace=False).tolist()) if n < len(idx) else idx.tolist())
    return ds.select(sorted(keep))


# ------------------------------------------------------------------------------------------------ tokenising
def encode_example(tokenizer, prompt: str, rationale: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are IGNORE on the prompt and equal to the ids on the rationale + EOS."""
    if tokenizer.eos_token_id is None:
        raise TrainError("the tokenizer has no eos token: the student could never learn to stop (student)")
    head = prompt_ids(tokenizer, prompt)
    tail = tokenizer(rationale, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return head + tail, [IGNORE] * len(head) + tail


def tokenize(ds: datasets.Dataset, tokenizer, recipe: TrainRecipe, split: str) -> tuple[datasets.Dataset, LengthReport]:
    """Token ids, labels, mode index (`mode_id`, a new column: datasets would keep the string type of `mode`) and
    length per row; over-length rows are counted, then dropped or refused."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "mode_id": [], "length": []}
        for text, rationale, mode in zip(batch["input"], batch["rationale"], batch["mode"]):
            ids, labels = encode_example(tokenizer, format_prompt(recipe.prompt_template, text), rationale)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["mode_id"].append(MODES.index(mode))
            out["length"].append(len(ids))
        return out

    encoded = ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenising {split}")
    lengths = np.asarray(encoded["length"])
    modes = np.asarray(encoded["mode_id"])
    over = lengths > recipe.max_length
    report = LengthReport(
        max_length=recipe.max_length,
        kept=int((~over).sum()),
        dropped={MODES[m]: int((over & (modes == m)).sum()) for m in range(len(MODES)) if (over & (modes == m)).any()},
    )
    if report.total_dropped and recipe.overlength == "error":
        raise TrainError(report.message(split).replace("were left out", "stop the run") + " or set overlength: drop")
    if report.total_dropped:
        encoded = encoded.select(np.flatnonzero(~over).tolist())
    if report.kept == 0:
        raise TrainError(f"{split}: no example fits in max_length {recipe.max_length} (max_length)")
    return encoded, report


@dataclass
class Collator:
    """Right-pads a batch; labels pad with IGNORE so padding never counts in the loss."""

    pad_token_id: int
    pad_to_multiple_of: int | None = 8

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"])
            labels[i, :n] = torch.as_tensor(f["labels"])
            mask[i, :n] = 1
        mode = torch.as_tensor([f["mode_id"] for f in features], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "mode": mode}
