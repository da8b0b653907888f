"""`mixdistill data fetch`: the upstream files of the built-in tasks, at pinned commits, into the data dir.

Each file comes from `<base>/<owner>/<repo>/<commit>/<path>` (raw GitHub by default) and must match the SHA-256
pinned in `mixdistill.tasks.sources`. Everything requested is downloaded into a scratch folder first and moved into
the data dir only when every hash matched, so a bad download leaves the data dir exactly as it was. Plain
`urllib` is enough for a handful of GETs; no extra dependency is taken for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mixdistill.errors import TaskError
from mixdistill.tasks import TASKS
from mixdistill.tasks.sources import BY_REPOSITORY, Source, SourceFile, sha256_file

BASE_ENV = "MIXDISTILL_FETCH_BASE_URL"
DEFAULT_BASE = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Fetched:
    task: str
    path: Path
    url: str
    status: str  # "downloaded" | "present"


def task_source(task: str) -> Source:
    t = TASKS.get(task)
    if t is None:
        raise TaskError(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)}")
    return BY_REPOSITORY[t.source]


def task_files(task: str) -> list[tuple[Source, SourceFile]]:
    src = task_source(task)
    wanted = set(TASKS[task].files)
    return [(src, f) for f in src.files if f.path in wanted]


def present(task: str, data: Path) -> list[str]:
    """The task's files missing or not matching their pinned hash (empty: the task is ready)."""
    return [f.path for _, f in task_files(task)
            if not (data / f.path).is_file() or sha256_file(data / f.path) != f.sha256]


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as r, dest.open("wb") as out:
            shutil.copyfileobj(r, out)
    except urllib.error.HTTPError as e:
        raise TaskError(f"cannot download {url}: HTTP {e.code}; nothing was written to the data dir") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TaskError(f"cannot download {url}: {reason}; nothing was written to the data dir") from None


def fetch(tasks: list[str] | None, data: Path, base_url: str | None = None) -> list[Fetched]:
    """Download the files of `tasks` (default: all built-in tasks) that are missing or differ from their pins."""
    base = base_url or os.environ.get(BASE_ENV) or DEFAULT_BASE
    names = list(tasks or TASKS)
    for name in names:
        task_source(name)  # unknown names fail before any download
    data.mkdir(parents=True, exist_ok=True)
    done: list[Fetched] = []
    todo: list[tuple[str, Source, SourceFile]] = []
    for name in names:
        for src, f in task_files(name):
            target = data / f.path
            if target.is_file() and sha256_file(target) == f.sha256:
                done.append(Fetched(name, target, src.raw_url(f, base), "present"))
            elif all(f.path != g.path for _, _, g in todo):
                todo.append((name, src, f))
    with tempfile.TemporaryDirectory(prefix=".mixdistill-fetch-", dir=data) as tmp:
        staged = []
        for name, src, f in todo:
            url = src.raw_url(f, base)
            scratch = Path(tmp) / f.path
            scratch.parent.mkdir(parents=True, exist_ok=True)
            _download(url, scratch)
            got = sha256_file(scratch)
            if got != f.sha256:
                raise TaskError(
                    f"{f.path}: SHA-256 {got[:16]}... does not match the pinned {f.sha256[:16]}... (from {url}); "
                    "nothing was written to the data dir"
                )
            staged.append((name, scratch, data / f.path, url))
        for name, scratch, target, url in staged:  # every hash matched: move into place
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch, target)
            done.append(Fetched(name, target, url, "downloaded"))
    return done
