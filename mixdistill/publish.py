"""Publishing a corpus version to the Hugging Face Hub: all configs as Parquet + card, one commit, one tag.

Everything that can fail is checked before the upload: token present, repo id valid, version tag not yet on the Hub,
rows present. The upload is a single commit (atomic on the Hub), so an interrupted push leaves the repo as it was; a repo that
the push itself created is deleted again when its first commit fails.
The token is handed to huggingface_hub only; it is never written to the registry, the card or any log.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mixdistill.corpus import CorpusError, export_version, load_version, version_selection, version_tag
from mixdistill.registry import Registry


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    tag: str
    files: list[tuple[str, int]]  # (path in repo, bytes)
    commit: str | None  # None for a dry run
    url: str | None


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def resolve_token(token: str | None) -> str | None:
    """An explicit token, else HF_TOKEN, else huggingface_hub's stored login."""
    if token:
        return token
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise CorpusError(f"invalid Hub repo name {repo_id!r}: {str(e).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise CorpusError(f"invalid Hub repo name {repo_id!r}: use owner/name")


def push_version(
    reg: Registry,
    ref: str,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> PushResult:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    check_repo_id(repo_id)
    record = load_version(reg, ref)
    tag = version_tag(record["version"])
    token = resolve_token(token)
    if token is None and not dry_run:
        raise CorpusError("no Hub token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)")
    api = _api(endpoint, token)

    with tempfile.TemporaryDirectory(prefix="mixdistill-push-") as tmp:
        with version_selection(reg, ref) as mixed:
            out = export_version(reg, ref, mixed, Path(tmp), repo_id=repo_id)
        files = sorted(
            (p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*") if p.is_file()
        )
        if dry_run:
            return PushResult(repo_id, tag, files, None, None)
        created = False
        try:
            try:
                refs = api.list_repo_refs(repo_id, repo_type="dataset")
                if any(t.name == tag for t in refs.tags):
                    raise CorpusError(f"{repo_id} already has version {tag}; bump the corpus version (nothing was uploaded)")
            except RepositoryNotFoundError:
                api.create_repo(repo_id, repo_type="dataset", private=private)
                created = True
            commit = api.create_commit(
                repo_id,
                [CommitOperationAdd(path, out / path) for path, _ in files],
                commit_message=f"{record['name']} {tag}",
                commit_description=f"mixdistill corpus {ref}, fingerprint {record['fingerprint']}",
                repo_type="dataset",
            )
            api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset",
                           tag_message=f"{record['name']} {record['version']}")
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", "?")
            if created and not _has_commits(api, repo_id):
                api.delete_repo(repo_id, repo_type="dataset")  # the repo this push created, still empty: as before
            raise CorpusError(f"Hub refused the push of {ref} to {repo_id} (HTTP {status}): {_first_line(e)}") from None
    with reg.transaction():
        reg.con.execute(
            "UPDATE corpora SET hub_repo = ?, hub_revision = ? WHERE corpus_id = ?",
            [repo_id, commit.oid, record["corpus_id"]],
        )
    return PushResult(repo_id, tag, files, commit.oid, commit.commit_url)


def _has_commits(api, repo_id: str) -> bool:
    return bool(api.list_repo_refs(repo_id, repo_type="dataset").branches)


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
