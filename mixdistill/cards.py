"""Dataset cards, audit reports and their plots, rendered from registry statistics with the templates in cards/."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import jinja2
import polars as pl

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


def make_plots(teacher_mode: pl.DataFrame, rows: pl.DataFrame) -> list[Plot]:
    """Pass rate per teacher and mode; rationale length per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        lengths = rows.filter(pl.col("mode") == mode)["rationale"].str.len_chars().to_list()
        if lengths:
            ax.hist(lengths, bins=30, alpha=0.6, color=color, label=f"{mode} (median {sorted(lengths)[len(lengths) // 2]})")
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
_CODED = ("teacher", "mode", "task", "reason", "rule", "execution", "split")


def audit_payload(audit: pl.DataFrame) -> str:
    import gzip
    import json

    problems = audit.select("problem_id", "question", "gold").unique("problem_id", keep="first").sort("problem_id")
    index = {pid: i for i, pid in enumerate(problems["problem_id"])}
    doc = {
        "problems": {"question": problems["question"].to_list(), "gold": problems["gold"].fill_null("").to_list()},
        "dicts": {},
        "rows": {
            "problem": [index[p] for p in audit["problem_id"]],
            "kept": [int(k) for k in audit["kept"]],
            "answer": audit["answer"].fill_null("").to_list(),
            "rationale": audit["rationale"].fill_null("").to_list(),
            "error": audit["error_text"].fill_null("").to_list(),
            "key": audit["request_key"].str.slice(0, 16).to_list(),
            "source_id": audit["source_id"].to_list(),
        },
    }
    for col in _CODED:
        values = audit[col].fill_null("")
        names = sorted(set(values))
        code = {v: i for i, v in enumerate(names)}
        doc["dicts"][col] = names
        doc["rows"][col] = [code[v] for v in values]
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=1, mtime=0)).decode("ascii")


def render_report(context: dict, failures: list[dict], audit: pl.DataFrame) -> str:
    """report.html: the summary, plots and rejection table, and the audit browser over every rationale."""
    summary = audit.group_by("kept").len().rows()
    counts = {bool(k): n for k, n in summary}
    return render("report.html.j2", failures=failures, payload=audit_payload(audit), total=audit.height,
                  kept_n=counts.get(True, 0), rejected_n=counts.get(False, 0), **context)
