"""`mixdistill reproduce`: the MD paper's table from one recipe, as a sequence of stages that each call one existing
API (build, run_eval, train) and each resume on their own.

Resume: `output_dir/state.json` records each stage's key (a hash of what it does), status, wall time and result. A
rerun skips a stage whose key is unchanged and done, reporting its earlier time; an interrupted stage keeps the
seconds it ran and continues through the stage's own resume (eval batches by eval_id, training from checkpoints).
Only the ensemble row generates nothing: it pools the stored paths of the CoT- and the PoT-distilled students with
the vote the MD row uses. The table is rewritten from `evals` at the end of every run.

This sits above build, train and evaluate; nothing below imports it.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from mixdistill import settings
from mixdistill.build import build
from mixdistill.corpus import CorpusError, export_path, load_version
from mixdistill.cpu import available_cores
from mixdistill.errors import MixdistillError
from mixdistill.evaluate.report import Cell, Table, plot_figure
from mixdistill.evaluate.run import load_task, run_eval, stored_paths
from mixdistill.evaluate.scores import Score, score
from mixdistill.generate import plan_generation
from mixdistill.ids import canonical_json, content_hash
from mixdistill.recipe import BuildRecipe, EvalRecipe, ReproduceRecipe, TrainRecipe, load_for_run
from mixdistill.registry import Registry
from mixdistill.train.run import ADAPTER_DIR, train as run_train
from mixdistill.verify.rules import get_rule

STATE_FILE = "state.json"
TEACHERS, BASE, COT, POT, ENSEMBLE, MD = ("Teachers (published)", "Base few-shot", "CoT-distilled", "PoT-distilled",
                                          "Ensemble (CoT-distilled + PoT-distilled)", "MD")
ROWS = (TEACHERS, BASE, COT, POT, ENSEMBLE, MD)


class ReproduceError(MixdistillError):
    """The reproduction cannot run as written (e.g. a corpus config without the mode a row trains on)."""


@dataclass(frozen=True)
class Student:
    row: str
    config: str  # corpus config it is trained on
    modes: tuple[str, ...]  # what it is evaluated on (and what its config must hold)


STUDENTS = (Student(COT, "cot", ("cot",)), Student(POT, "pot", ("pot",)), Student(MD, "mixed", ("cot", "pot")))


# ------------------------------------------------------------------------------------------------ pure parts
def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest at small n and near 0 or 1, where the normal one is not."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def count_text(correct: int, n: int) -> str:
    """`52/200 (26.0%, 95% CI 20.4–32.5)`."""
    lo, hi = wilson(correct, n)
    return f"{correct}/{n} ({100 * correct / n:.1f}%, 95% CI {100 * lo:.1f}–{100 * hi:.1f})" if n else "0/0"


def columns(k: int) -> list[tuple[str, int, str]]:
    """(mode, k, header) of the table's columns: single greedy paths, then the votes over k sampled paths."""
    return [("cot", 1, "CoT (greedy)"), ("pot", 1, "PoT (greedy)"), ("md", 1, "MD vote (greedy)"),
            ("cot", k, f"CoT k={k} maj."), ("pot", k, f"PoT k={k} maj."), ("md", k, f"MD vote k={k}")]


@dataclass(frozen=True)
class Count:
    correct: int
    n: int
    eval_id: str

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


@dataclass
class ReproTable:
    """Rows (model) x columns (mode, k); None where a row has no such mode."""

    title: str
    header: str
    k: int
    rows: dict[str, list[Count | None]]

    def markdown(self) -> str:
        heads = [h for _, _, h in columns(self.k)]
        lines = [f"# {self.title}", "", self.header, "", "| model | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads)]
        for row, cells in self.rows.items():
            lines.append(f"| {row} | " + " | ".join("" if c is None else count_text(c.correct, c.n) for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def as_report_table(self, task: str) -> Table:
        """The same numbers in `evaluate.report`'s shape, to draw with the house plot (one group per column)."""
        heads = [h for _, _, h in columns(self.k)]
        cells = [[None if c is None else Cell(c.accuracy, c.n) for c in row] for row in self.rows.values()]
        rows = [(name, task, [None if c is None else c.accuracy for c in row]) for name, row in self.rows.items()]
        return Table(heads, rows, cells)


# ------------------------------------------------------------------------------------------------ state
@dataclass
class State:
    """`state.json`: per stage its key, status (done / interrupted / failed), seconds (all attempts) and result."""

    path: Path
    stages: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "State":
        if not path.is_file():
            return cls(path)
        try:
            return cls(path, json.loads(path.read_text(encoding="utf-8"))["stages"])
        except (ValueError, KeyError, TypeError):
            raise ReproduceError(f"{path}: not a reproduction state file; move it away to start over") from None

    def record(self, stage: str, key: str, status: str, seconds: float, result: dict) -> None:
        self.stages[stage] = {"key": key, "status": status, "seconds": round(seconds, 1), "result": result}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages}, indent=1), encoding="utf-8")
        tmp.replace(self.path)  # a kill mid-write leaves the previous state, never half a file


@dataclass
class Stage:
    id: str
    title: str
    key: str  # what the stage does; a changed key reruns it
    run: Callable[[], dict]


@dataclass
class Runner:
    """Runs stages in order, numbered `[i/n]`, skipping those done before with the same key."""

    state: State
    say: Callable[[str], None]
    total: int
    scope: str  # the registry: a stage done against another registry is not done against this one
    done: int = 0

    def run(self, stage: Stage) -> dict:
        self.done += 1
        tag = f"[{self.done}/{self.total}] {stage.title}"
        before = self.state.stages.get(stage.id) or {}
        key = _key(stage.key, self.scope)
        same = before.get("key") == key
        if same and before.get("status") == "done":
            self.say(f"{tag} ... already done ({before['seconds']:.1f} s)")
            return before["result"]
        self.say(f"{tag} ...")
        spent = before.get("seconds", 0.0) if same else 0.0  # an interrupted attempt's time counts
        started = time.monotonic()
        try:
            result = stage.run()
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            self.state.record(stage.id, key, status, spent + time.monotonic() - started, {})
            raise
        took = time.monotonic() - started
        self.state.record(stage.id, key, "done", spent + took, result)
        self.say(f"{tag}: done in {took:.1f} s")
        return result


# ------------------------------------------------------------------------------------------------ stages
@dataclass
class Reproduction:
    recipe: ReproduceRecipe
    registry: Path
    data_dir: Path
    console: Console
    progress: bool = True

    @property
    def out(self) -> Path:
        return Path(self.recipe.output_dir)

    def build_recipe(self) -> BuildRecipe:
        return load_for_run(self.recipe.corpus, BuildRecipe)

    def corpus(self) -> dict:
        """Build the corpus unless the registry has it and its export is on disk (builds are cached anyway)."""
        spec = self.build_recipe()
        root = settings.default_home() / "corpora"
        out = export_path(root, spec.name, spec.version)
        ref = f"{spec.name}@{spec.version}"
        with Registry.open(self.registry) as reg:
            try:
                load_version(reg, ref)
                cached = all((out / c / "train.parquet").is_file() for c in ("cot", "pot", "mixed"))
            except CorpusError:
                cached = False
            if cached:
                self.console.print(f"corpus {ref}: in the registry, export {out}", highlight=False)
            else:
                out = build(reg, spec, root, progress=self.progress, data_dir=self.data_dir,
                            plan=plan_generation(spec, self.data_dir)).export_dir
        return {"ref": ref, "export": str(out)}

    def train_recipe(self, student: Student, corpus: dict) -> TrainRecipe:
        name, version = corpus["ref"].split("@", 1)
        return TrainRecipe.model_validate({
            **self.recipe.train, "name": f"{self.recipe.name}-{student.config}", "student": self.recipe.student,
            "corpus": {"name": name, "version": version, "parquet": corpus["export"], "config": student.config},
            "output_dir": str(self.out / "train" / student.config),
        })

    def eval_recipe(self, row: str, k: int, modes: tuple[str, ...], adapter: str | None = None) -> EvalRecipe:
        prompt = "few-shot" if adapter is None else "student"
        slug = row.split()[0].lower()
        return EvalRecipe.model_validate({
            **self.recipe.eval_settings, "kind": "eval", "name": f"{self.recipe.name}-{slug}-k{k}",
            "label": f"{row} [{self.recipe.name}]", "model": self.recipe.student, "adapter": adapter,
            "prompt": prompt, "modes": list(modes), "k": k, "tasks": [self.recipe.task.model_dump()],
        })

    def teacher_recipe(self) -> EvalRecipe:
        """The teachers' eval on the same problems as every other row (its task split, with the reproduction's limit)."""
        spec = load_for_run(self.recipe.teacher_eval, EvalRecipe)
        task = self.recipe.task
        if [(t.name, t.split_name) for t in spec.tasks] != [(task.name, task.split_name)]:
            raise ReproduceError(f"{self.recipe.teacher_eval}: tasks: the teachers' row must be evaluated on "
                                 f"{task.name}/{task.split_name} only, like every other row")
        limit = task.limit
        return spec.model_copy(update={"tasks": [t.model_copy(update={"limit": limit}) for t in spec.tasks]})

    def evaluate(self, *recipes: EvalRecipe) -> dict:
        """{k: {mode: eval_id}} of the recipes' one task split."""
        out = {}
        for spec in recipes:
            [result] = run_eval(spec, self.registry, self.data_dir, progress=self.progress, console=self.console)
            out[str(spec.k)] = {m.mode: m.eval_id for m in result.modes}
        return out

    def train(self, spec: TrainRecipe) -> dict:
        result = run_train(spec, self.registry, console=self.console)
        return {"adapter": str(result.adapter_path), "model_id": result.model_id,
                "steps": result.metrics.get("global_step")}

    def ensemble(self, cot_evals: dict, pot_evals: dict) -> dict:
        """The ensemble row per k: the CoT student's cot paths + the PoT student's pot paths, the MD vote, in `evals`."""
        spec = self.eval_recipe(ENSEMBLE, 1, ("cot", "pot"))
        rule = get_rule(spec.rule, spec.cot_reading, spec.pot_conventions)
        split, problems = load_task(spec.tasks[0], 0, self.data_dir)
        out = {}
        with Registry.open(self.registry) as reg:
            for k in (1, self.recipe.multi_k):
                sources = {"cot": cot_evals[str(k)]["cot"], "pot": pot_evals[str(k)]["pot"]}
                s = pooled_score(problems, stored_paths(reg, sources["cot"], k), stored_paths(reg, sources["pot"], k),
                                 rule, spec.mode_weights, spec.tie_break)
                models = reg.query("SELECT eval_id, model FROM evals WHERE eval_id IN (SELECT unnest(?))",
                                   [list(sources.values())])
                model_of = dict(models.iter_rows())
                eval_id = content_hash({"ensemble": sources, "weights": spec.mode_weights, "tie_break": spec.tie_break})
                summary = {"label": f"{ENSEMBLE} [{self.recipe.name}]", "recipe": self.recipe.name,
                           "sample_eval_ids": sources, "mode_weights": spec.mode_weights, "tie_break": spec.tie_break,
                           "limit": spec.tasks[0].limit, **s.summary()}
                reg.insert("evals", [{
                    "eval_id": eval_id, "run_id": None,
                    "model": f"ensemble:{model_of.get(sources['cot'])}+{model_of.get(sources['pot'])}",
                    "task": spec.tasks[0].name, "split": split, "mode": "md", "k": k,
                    "rule": f"{rule.name}@{rule.version}", "n": s.n, "correct": s.correct, "accuracy": s.accuracy,
                    "summary": canonical_json(summary),
                }], on_conflict="replace")
                out[str(k)] = {"md": eval_id}
        return out


def pooled_score(problems, cot_paths: dict, pot_paths: dict, rule, weights, tie_break) -> Score:
    """The MD vote over two models' paths: problem by problem, one model's CoT paths and the other's PoT paths."""
    pooled = {p.problem_id: list(cot_paths.get(p.problem_id, [])) + list(pot_paths.get(p.problem_id, []))
              for p in problems}
    return score(problems, pooled, rule, weights, tie_break)[0]


def check_modes(export: Path, ref: str, split: str = "train") -> None:
    """Each student's corpus config holds the modes the student is trained and evaluated on: checked before training."""
    for student in STUDENTS:
        path = export / student.config / f"{split}.parquet"
        found = set(pl.read_parquet(path, columns=["mode"])["mode"].unique()) if path.is_file() else set()
        missing = [m for m in student.modes if m not in found]
        if missing:
            raise ReproduceError(f"row {student.row}: corpus {ref} config {student.config!r} has no {missing[0]} rows "
                                 f"in its {split} split ({path}); the row needs them")


def _key(*parts: Any) -> str:
    return content_hash(json.loads(json.dumps(parts, default=str)))


def _recipe_key(spec) -> dict:
    return {k: v for k, v in spec.model_dump(mode="json").items() if k != "threads"}  # threads change no result


@dataclass
class ReproduceResult:
    table: ReproTable
    stage_seconds: dict[str, float]
    files: list[Path]


def reproduce(recipe: ReproduceRecipe, registry_path: Path, data_dir: Path, *, console: Console | None = None,
              progress: bool = True) -> ReproduceResult:
    """Run (or resume) every stage, then write table.md, table.png and table.json in output_dir."""
    console = console or Console(stderr=True)
    say = lambda line: console.print(line, highlight=False, markup=False)  # noqa: E731
    job = Reproduction(recipe, Path(registry_path), Path(data_dir), console, progress)
    state = State.load(job.out / STATE_FILE)
    k = recipe.multi_k
    build_spec = job.build_recipe()

    runner = Runner(state, say, total=10, scope=str(job.registry.resolve()))
    corpus = runner.run(Stage("corpus", f"corpus {build_spec.name}@{build_spec.version}", _key(_recipe_key(build_spec)),
                              job.corpus))
    check_modes(Path(corpus["export"]), corpus["ref"])  # before any training starts
    teachers = job.teacher_recipe()
    base = [job.eval_recipe(BASE, n, ("cot", "pot")) for n in (1, k)]
    trains = {s.config: job.train_recipe(s, corpus) for s in STUDENTS}
    student_evals = {s.config: [job.eval_recipe(s.row, n, s.modes, str(Path(trains[s.config].output_dir) / ADAPTER_DIR))
                                for n in (1, k)] for s in STUDENTS}
    train_keys = {c: _key(_recipe_key(t)) for c, t in trains.items()}
    eval_keys = {c: _key([_recipe_key(r) for r in rs], train_keys[c]) for c, rs in student_evals.items()}

    results = {"teachers": runner.run(Stage("teachers", f"eval {TEACHERS} ({teachers.name}, replay)",
                                            _key(_recipe_key(teachers)), lambda: job.evaluate(teachers))),
               "base": runner.run(Stage("base", f"eval {BASE} (cot, pot; k=1, k={k})",
                                        _key([_recipe_key(r) for r in base]), lambda: job.evaluate(*base)))}
    for s in STUDENTS:
        results[f"train {s.config}"] = runner.run(Stage(f"train {s.config}", f"train {s.row} (config {s.config})",
                                                        train_keys[s.config], lambda s=s: job.train(trains[s.config])))
    for s in STUDENTS:
        results[f"eval {s.config}"] = runner.run(Stage(
            f"eval {s.config}", f"eval {s.row} ({', '.join(s.modes)}; k=1, k={k})", eval_keys[s.config],
            lambda s=s: job.evaluate(*student_evals[s.config])))
    results["ensemble"] = runner.run(Stage(
        "ensemble", f"{ENSEMBLE} (stored paths, no generation)", _key(eval_keys["cot"], eval_keys["pot"], "ensemble"),
        lambda: job.ensemble(results["eval cot"], results["eval pot"])))

    evals_of = {TEACHERS: results["teachers"], BASE: results["base"], COT: results["eval cot"],
                POT: results["eval pot"], ENSEMBLE: results["ensemble"], MD: results["eval mixed"]}
    table = read_table(job, evals_of, header_line(recipe, corpus, trains["mixed"], results, k, base[1]))
    seconds = {sid: s["seconds"] for sid, s in state.stages.items()}
    task = f"{recipe.task.name}/{recipe.task.split_name}"
    return ReproduceResult(table, seconds, write_outputs(job.out, table, seconds, task))


def header_line(recipe: ReproduceRecipe, corpus: dict, md_train: TrainRecipe, results: dict, k: int,
                sampled: EvalRecipe) -> str:
    steps = sorted({results[f"train {s.config}"]["steps"] for s in STUDENTS}, key=str)
    s = sampled.sampling
    return (f"Model {recipe.student} (LoRA r={md_train.lora.r}); corpus {corpus['ref']}; "
            f"training steps {'/'.join(map(str, steps))}, seed {md_train.seed}; task {recipe.task.name}/"
            f"{recipe.task.split_name}; k={k} (temperature {s.temperature}, top_p {s.top_p}, max_tokens {s.max_tokens}, "
            f"seed {s.seed}); greedy columns: one path, max_tokens {s.max_tokens}. Cells: correct/n (accuracy, 95% "
            f"Wilson interval).")


def read_table(job: Reproduction, evals_of: dict[str, dict], header: str) -> ReproTable:
    """The table from `evals` (what the registry holds is what is reported)."""
    ids = [i for by_k in evals_of.values() for by_mode in by_k.values() for i in by_mode.values()]
    with Registry.open(job.registry, read_only=True) as reg:
        found = reg.query("SELECT eval_id, correct, n FROM evals WHERE eval_id IN (SELECT unnest(?))", [ids])
    counts = {i: Count(c, n, i) for i, c, n in found.iter_rows()}
    rows = {}
    for row in ROWS:
        by_k = evals_of[row]
        rows[row] = [counts.get((by_k.get(str(k)) or {}).get(mode, "")) for mode, k, _ in columns(job.recipe.multi_k)]
    return ReproTable(f"Reproduction {job.recipe.name}", header, job.recipe.multi_k, rows)


def plot_png(table: ReproTable, task: str) -> bytes:
    """The house plot (`evaluate.report`), one group per column, with each bar's 95% interval drawn on it."""
    import io

    import matplotlib.pyplot as plt

    fig = plot_figure(table.as_report_table(task))
    ax = fig.axes[0]
    for bars, cells in zip(list(ax.containers), table.rows.values()):  # the bar containers, one per row
        for bar, c in zip(bars, cells):
            if c is not None:
                lo, hi = wilson(c.correct, c.n)
                x = bar.get_x() + bar.get_width() / 2
                ax.errorbar(x, 100 * c.accuracy, [[100 * (c.accuracy - lo)], [100 * (hi - c.accuracy)]], fmt="none",
                            ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_title(f"{task}: accuracy per model, greedy and k={table.k} votes (bars: 95% Wilson interval)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: Path, table: ReproTable, seconds: dict[str, float], task: str) -> list[Path]:
    """table.md, table.png and table.json, rewritten by every run."""
    out.mkdir(parents=True, exist_ok=True)
    total = round(sum(seconds.values()), 1)
    machine = f"{platform.platform()}, {platform.processor() or platform.machine()}, {available_cores()} cores available"
    times = "\n".join(f"| {sid} | {s:.1f} |" for sid, s in seconds.items())
    md = out / "table.md"
    md.write_text(table.markdown()
                  + f"\nWall time per stage (all attempts of a resumed run):\n\n| stage | seconds |\n| --- | ---: |\n"
                  f"{times}\n| total | {total:.1f} |\n\nMachine: {machine}.\n\n![accuracy](table.png)\n", encoding="utf-8")
    png = out / "table.png"
    png.write_bytes(plot_png(table, task))
    cells = {row: {h: None if c is None else {"correct": c.correct, "n": c.n, "accuracy": c.accuracy,
                                               "ci95": list(wilson(c.correct, c.n)), "eval_id": c.eval_id}
                   for (_, _, h), c in zip(columns(table.k), row_cells)}
             for row, row_cells in table.rows.items()}
    data = out / "table.json"
    data.write_text(json.dumps({"header": table.header, "k": table.k, "rows": cells, "stage_seconds": seconds,
                                "total_seconds": total, "machine": machine}, indent=1), encoding="utf-8")
    return [md, png, data]
