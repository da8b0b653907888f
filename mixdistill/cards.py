"""Dataset cards, audit reports and their plots, rendered from registry statistics with the templates in cards/."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import jinja2
import polars as pl

TEMPLATES = Path(__file__).parent / "_cards"  # a link to the repository's cards/ folder

# Hub license ids of the benchmark sources, most restrictive first
_LICENSE_IDS = {"CC-BY-NC-4.0": "cc-by-nc-4.0", "Apache-2.0": "apache-2.0", "MIT": "mit"}


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


def derive_license(source_licenses: list[str]) -> dict:
    """One Hub license id for the corpus from its sources': the single one, else the non-commercial one if any source
    is non-commercial, else `other` with the list."""
    found = sorted({lic for lic in source_licenses if lic})
    if len(found) == 1 and found[0] in _LICENSE_IDS:
        lic = _LICENSE_IDS[found[0]]
        return {"id": lic, "details": found[0], "note": f"Sources are licensed {found[0]}."}
    if "CC-BY-NC-4.0" in found:
        return {
            "id": "cc-by-nc-4.0",
            "details": ", ".join(found),
            "note": f"Sources are licensed {', '.join(found)}; the non-commercial terms of CC BY-NC 4.0 apply to the whole.",
        }
    return {"id": "other", "details": ", ".join(found) or "unknown",
            "note": f"Sources are licensed {', '.join(found) or 'unknown'}; each row's task tells which applies."}


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
