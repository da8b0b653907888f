"""`mixdistill push-adapter`: upload a trained adapter with its model card (cards/model_card.md) in one commit.

Everything that can fail is checked before the upload (adapter files, lineage file, token, repo id). The token goes to
huggingface_hub only: it is never written to the card, the registry or a log. Only the adapter, tokenizer, lineage
file and card are uploaded (not `training_args.bin`, a pickle).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixdistill.train import records
from mixdistill.student import DEFAULT_TEMPLATE, INFO_FILE
from mixdistill.train.data import TrainError

SKIP = {"training_args.bin", "README.md"}
CARD = "model_card.md"
EXAMPLE_INPUT = "[PoT] Tom has 3 apples and buys 4 more. How many apples does he have?"  # the card's usage snippet


@dataclass(frozen=True)
class AdapterPush:
    repo_id: str
    files: list[str]
    commit: str | None  # None for a dry run
    url: str | None
    card: str  # the README.md uploaded (or, for a dry run, that would be)


def resolve_adapter(key: str, registry_path: Path | None) -> tuple[Path, dict[str, Any] | None]:
    """A `models` row (by model_id or adapter path) and its adapter folder, or a bare adapter folder."""
    row = records.find_model(registry_path, key) if registry_path else None
    path = Path(row["adapter_path"]) if row else Path(key)
    if not (path / "adapter_config.json").is_file():
        raise TrainError(f"{key}: not a registered model id or an adapter folder (no adapter_config.json in {path})")
    if not (path / INFO_FILE).is_file():
        raise TrainError(f"{path}: no {INFO_FILE} (write it by training with `mixdistill train`)")
    return path, row


def eval_results(registry_path: Path | None, keys: list[str]) -> list[dict[str, Any]]:
    """Rows of `evals` recorded for this model (by model id, adapter path or Hub repo), for model-index."""
    if not registry_path or not Path(registry_path).exists():
        return []
    from mixdistill.registry import Registry
    from mixdistill.registry.evals import card_results  # the newest eval per task, split, mode and k

    with Registry.open(registry_path, read_only=True) as reg:
        return card_results(reg, keys)


def is_local_model(name: str) -> bool:
    """A base model given as a folder (or anything that is not a Hub repo id): the card names it, never links it."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name).expanduser().exists():
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def render_card(info: dict[str, Any], repo_id: str, results: list[dict[str, Any]]) -> str:
    from mixdistill.cards import render

    corpus = info["corpus"]
    base = info["base_model"]
    return render(
        CARD,
        name=repo_id.split("/")[-1], repo_id=repo_id, base_model=base, base_revision=info.get("base_revision"),
        base_local=is_local_model(base), base_name=Path(base).expanduser().name or base,
        template_literal=repr(info["recipe"].get("prompt_template") or DEFAULT_TEMPLATE), example_literal=repr(EXAMPLE_INPUT),
        corpus=corpus, dataset_id=corpus.get("hub"), recipe=info["recipe"], metrics=info["metrics"], results=results,
        license="other",  # the base model's license governs the adapter; the card says which base that is
    )


def push_adapter(
    key: str,
    repo_id: str,
    *,
    registry_path: Path | None,
    private: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> AdapterPush:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from mixdistill.publish import check_repo_id, resolve_token

    check_repo_id(repo_id)
    path, row = resolve_adapter(key, registry_path)
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    keys = [k for k in (row and row["model_id"], str(path.resolve()), repo_id) if k]
    card = render_card(info, repo_id, eval_results(registry_path, keys))
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name not in SKIP)
    if dry_run:
        return AdapterPush(repo_id, [*files, "README.md"], None, None, card)
    token = resolve_token(token)
    if token is None:
        raise TrainError("no Hub token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="mixdistill-card-") as tmp:
        readme = Path(tmp) / "README.md"
        readme.write_text(card, encoding="utf-8")
        operations = [CommitOperationAdd(f, path / f) for f in files] + [CommitOperationAdd("README.md", readme)]
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.create_commit(
                repo_id, operations, repo_type="model",
                commit_message=f"adapter {info['recipe']['name']} ({info['base_model']} + LoRA on {info['corpus']['label']})",
            )
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", "?")
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise TrainError(f"Hub refused the adapter push to {repo_id} (HTTP {status}): {first}") from None
    if row is not None:
        records.set_model_hub(registry_path, row["model_id"], repo_id, commit.oid)
    return AdapterPush(repo_id, [*files, "README.md"], commit.oid, commit.commit_url, card)
