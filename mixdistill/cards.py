"""Dataset cards, audit reports and their plots, rendered from registry statistics with the templates in cards/."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

import jinja2
import polars as pl

if TYPE_CHECKING:
    from mixdistill.workspace import Workspace

TEMPLATES = Path(__file__).parent / "_cards"  # a link to the repository's cards/ folder

@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    png: bytes

    @property
    def path(self) -> str:
        return f"assets/{self.name}.png"

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode()


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def make_plots(teacher_mode: pl.DataFrame, ws: "Workspace") -> list[Plot]:
    """Pass rate per teacher and mode; rationale length per mode (kept rows: the workspace's `rows`, counted per
    length in SQL, so the histogram costs no list of every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots = []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = [f"{t}\n{m}" for t, m in zip(teacher_mode["teacher"], teacher_mode["mode"])]
    rates = [100 * (r or 0) for r in teacher_mode["pass_rate"]]
    colors = ["#4c72b0" if m == "cot" else "#dd8452" for m in teacher_mode["mode"]]
    ax.bar(range(len(labels)), rates, color=colors)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("verified correct (%)")
    ax.set_ylim(0, 100)
    for i, r in enumerate(rates):
        ax.text(i, r + 1, f"{r:.1f}", ha="center", fontsize=8)
    plots.append(Plot("pass_rate", "Pass rate per teacher and mode", _png(fig)))

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for mode, color in (("cot", "#4c72b0"), ("pot", "#dd8452")):
        found = ws.execute("SELECT length(rationale) AS n, count(*) FROM rows WHERE mode = ? GROUP BY 1 ORDER BY 1",
                           [mode])
        if found:
            lengths, counts = np.array([f[0] for f in found]), np.array([f[1] for f in found])
            median = int(lengths[np.searchsorted(np.cumsum(counts), counts.sum() // 2, side="right")])
            edges = np.histogram_bin_edges(lengths, bins=30)  # depends on the range only: as over every row
            ax.hist(lengths, bins=edges, weights=counts, alpha=0.6, color=color, label=f"{mode} (median {median})")
    ax.set_xlabel("rationale length (characters)")
    ax.set_ylabel("rows")
    ax.legend()
    plots.append(Plot("rationale_length", "Rationale length per mode (kept rows)", _png(fig)))
    return plots


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(["html"]),
    )


def render(template: str, **context) -> str:
    return _env().get_template(template).render(**context)


# The audit browser's data: one gzip-compressed, base64-encoded JSON document inside report.html, columnar, with
# repeated values (teacher, mode, task, reason, rule, execution, split) dictionary-encoded and each question stored
# once per problem. The page decompresses it with the browser's DecompressionStream and pages through it, so a
# report of 200,000 rationales stays one self-contained file (`mixdistill bench report` measures size and load time).
# It is written as it is made, a chunk of one column at a time, from the workspace table `audit`: never whole in memory.
_CODED = ("teacher", "mode", "task", "reason", "rule", "execution", "split")
_PLAIN = {  # column of the document -> SQL over `audit`
    "kept": "kept::INTEGER", "answer": "coalesce(answer, '')", "rationale": "coalesce(rationale, '')",
    "error": "coalesce(error_text, '')", "key": "substr(request_key, 1, 16)", "source_id": "source_id",
}
_PAYLOAD = "\x00mixdistill-audit-payload\x00"  # where the template's payload goes


def _payload_json(ws: "Workspace") -> Iterator[str]:
    """The document's canonical JSON (`json.dumps(doc, ensure_ascii=False, separators=(",", ":"))`) in pieces."""
    import json

    dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731

    def array(sql: str) -> Iterator[str]:
        yield "["
        first = True
        for table in ws.batches(sql):
            values = table.column(0).to_pylist()
            if values:
                yield ("" if first else ",") + dump(values)[1:-1]
                first = False
        yield "]"

    problems = "(SELECT * FROM audit QUALIFY row_number() OVER (PARTITION BY problem_id ORDER BY _pos) = 1)"
    yield '{"problems":{"question":'
    yield from array(f"SELECT question FROM {problems} ORDER BY problem_id")
    yield ',"gold":'
    yield from array(f"SELECT coalesce(gold, '') FROM {problems} ORDER BY problem_id")
    yield '},"dicts":{'
    for i, col in enumerate(_CODED):
        names = [r[0] for r in ws.execute(f"SELECT DISTINCT coalesce({col}, '') FROM audit ORDER BY 1")]
        yield ("," if i else "") + dump(col) + ":" + dump(names)
    yield '},"rows":{"problem":'
    yield from array("SELECT dense_rank() OVER (ORDER BY problem_id) - 1 AS v FROM audit ORDER BY _pos")
    for col, sql in (*_PLAIN.items(), *((c, f"dense_rank() OVER (ORDER BY coalesce({c}, '')) - 1") for c in _CODED)):
        yield "," + dump(col) + ":"
        yield from array(f"SELECT {sql} AS v FROM audit ORDER BY _pos")
    yield "}}"


def write_payload(ws: "Workspace", out: IO[str]) -> None:
    """gzip (level 1, no timestamp: `gzip.compress(doc, 1, mtime=0)`'s bytes) of the document, base64-encoded."""
    import zlib

    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    held = b""
    for piece in _payload_json(ws):
        held += packer.compress(piece.encode("utf-8"))
        if len(held) >= 3 << 16:
            cut = len(held) - len(held) % 3
            out.write(base64.b64encode(held[:cut]).decode("ascii"))
            held = held[cut:]
    out.write(base64.b64encode(held + packer.flush()).decode("ascii"))


def write_report(path: Path, context: dict, failures: list[dict], ws: "Workspace") -> None:
    """report.html: the summary, plots and rejection table, and the audit browser over every rationale (the
    workspace table `audit`), written as it is made."""
    counts = dict(ws.execute("SELECT kept, count(*) FROM audit GROUP BY kept"))
    page = render("report.html.j2", failures=failures, payload=_PAYLOAD, total=sum(counts.values()),
                  kept_n=counts.get(True, 0), rejected_n=counts.get(False, 0), **context)
    head, tail = page.split(_PAYLOAD)
    with open(path, "w", encoding="utf-8") as out:
        out.write(head)
        write_payload(ws, out)
        out.write(tail)
