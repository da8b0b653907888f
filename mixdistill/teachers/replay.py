"""Replay: answers taken from recorded outputs instead of a live model, matched to problems by question text.

Sources (`path` of the teacher):
- a PoT outputs JSONL (Program-of-Thoughts `outputs/*.jsonl`: `question` [+ `passage`], `generated` = [program]),
- a folder or file of distilling-step-by-step PaLM completions (`datasets/<task>/llm/{split}_CoT_{i}.json`, lists of
  raw completions aligned with `../<task>_{split}.json` in blocks of 500; the text after the first "Q:" is the model
  running on into a hallucinated next question and is cut, as the upstream loader does),
- a JSONL (or JSON list) of `{"question", "mode", "response"}` records, or of records with other field names mapped
  by the recipe's `fields:` (`{question: ..., response: ..., mode: ...}`; `mode: pot` for a file of one mode),
- another registry (`*.duckdb`): its `ok` generations of the teacher whose name or model is this teacher's `model`.
Questions match after `normalize_question`. Recorded answer i of a (question, mode) serves sample index i. Requests
without a recording are not answered; recorded questions that match no requested problem are counted
(`unmatched`), with their first examples, so a file that silently misses problems is visible.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from mixdistill.workspace import registered
from mixdistill.teachers.base import Teacher, TeacherError, TeacherRequest, TeacherResult

if TYPE_CHECKING:
    import polars as pl

DSS_BLOCK = 500
_DSS_FILE = re.compile(r"^(?P<split>[a-z]+)_CoT_(?P<idx>\d+)\.json$")


_ASCII_DROPPED = bytes(c for c in range(128) if unicodedata.category(chr(c)).startswith("P") and chr(c) not in ".,/:")
_ASCII_PUNCTUATION = bytes.maketrans(_ASCII_DROPPED, b" " * len(_ASCII_DROPPED))
_NOT_BETWEEN_DIGITS = re.compile(r"[.,/:](?:(?<![0-9].)|(?![0-9]))")  # these four are kept only between two digits


def normalize_question(text: str) -> str:
    """What identifies a problem's question, so published outputs match as users have them: Unicode NFKC (full-width
    digits, ligatures, non-breaking spaces), case (casefold), punctuation (dropped, except a `.`, `,`, `/` or `:`
    between two digits, so "3.5" and "35" stay apart) and whitespace (collapsed). "Body\\nQuestion?" and
    "body question." are the same question."""
    text = str(text)
    if text.isascii():  # the same result at C speed: NFKC is the identity on ASCII, casefold is lower
        text = text.encode("ascii").lower().translate(_ASCII_PUNCTUATION).decode("ascii")
        return " ".join(_NOT_BETWEEN_DIGITS.sub(" ", text).split())
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P"):
            between_digits = 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
            out.append(ch if between_digits and ch in ".,/:" else " ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


Recordings = dict[tuple[str, str], list[str]]  # (normalized question, mode) -> responses in sample order
Recorded = Iterator[tuple[str, str, str]]  # (normalized question, mode, response), in the file's order
UNMATCHED_EXAMPLES = 3
INDEX_BATCH = 50_000  # recordings per insert into the index
# The index's own DuckDB memory limit, explicit and small (DuckDB spills what is over it to the index's temporary
# folder): it sits beside the registry's connection (`settings.db_memory()`) in the same process.
INDEX_MEMORY = "256MB"


def _dss_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*_CoT_*.json"))
    return [f for f in files if _DSS_FILE.match(f.name)]


def _read_dss(path: Path) -> Recorded:
    for f in _dss_files(path):
        m = _DSS_FILE.match(f.name)
        inputs_file = next(iter(sorted(f.parent.parent.glob(f"*_{m['split']}.json"))), None)
        if inputs_file is None:
            raise TeacherError(f"replay file {f}: no matching ../<task>_{m['split']}.json with the questions")
        inputs = [json.loads(line)["input"] for line in inputs_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        completions = json.loads(f.read_text(encoding="utf-8"))
        offset = int(m["idx"]) * DSS_BLOCK
        for i, completion in enumerate(completions):
            if offset + i < len(inputs):
                yield normalize_question(inputs[offset + i]), "cot", completion.split("Q:", 1)[0].strip()


def _records(path: Path):
    """(line number, record) pairs from a JSONL file (read line by line), or from a .json file holding one list of
    records."""
    if path.suffix == ".json":
        try:
            whole = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            whole = None
        if isinstance(whole, list):
            yield from enumerate(whole, start=1)
            return
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except ValueError:
                    raise TeacherError(f"replay file {path}: line {n} is not JSON") from None


def _mapped(rec: dict, fields) -> dict:
    """A record with the recipe's field names mapped to question / response / mode."""
    out = {k: v for k, v in rec.items() if k not in ("question", "response", "mode")}
    for name in ("question", "response"):
        if getattr(fields, name) in rec:
            out[name] = rec[getattr(fields, name)]
    if fields.mode in rec:
        out["mode"] = rec[fields.mode]
    elif fields.mode in ("cot", "pot"):
        out["mode"] = fields.mode
    return out


def _read_jsonl(path: Path, fields=None) -> Recorded:
    for n, rec in _records(path):
        if isinstance(rec, dict) and fields is not None:
            rec = _mapped(rec, fields)
        if not isinstance(rec, dict) or "question" not in rec:
            continue  # header lines (a PoT file's "demonstration"/"prompt" lines) carry no problem
        if "generated" in rec:  # Program-of-Thoughts outputs
            question = normalize_question(f"{rec.get('passage', '')} {rec['question']}")
            programs = rec["generated"] if isinstance(rec["generated"], list) else [rec["generated"]]
            for program in programs:
                yield question, "pot", str(program)
        elif "response" in rec and rec.get("mode") in ("cot", "pot"):
            yield normalize_question(rec["question"]), rec["mode"], str(rec["response"])
        else:
            names = ("'mode' + 'response'" if fields is None
                     else f"{fields.mode!r} + {fields.response!r} (the recipe's fields:)")
            raise TeacherError(f"replay file {path}: record {n}: need 'generated' or {names} fields")


def _read_registry(path: Path, teacher: str) -> Recorded:
    from mixdistill.registry import Registry

    with Registry.open(path, read_only=True) as reg:
        df = reg.query(
            "SELECT p.question, g.mode, g.response_text FROM generations g"
            " JOIN problems p USING (problem_id) JOIN teachers t USING (teacher_id)"
            " WHERE g.status = 'ok' AND (t.name = ? OR t.model = ?) ORDER BY g.problem_id, g.mode, g.sample_index",
            [teacher, teacher],
        )
    for question, mode, text in df.iter_rows():
        yield normalize_question(question), mode, text


def read_recordings(path: Path, teacher: str, fields=None) -> Recorded:
    """Every recorded answer of a replay source, one at a time (a source is checked before the first is read)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TeacherError(f"replay file not found: {path}")
    if path.suffix == ".duckdb":
        return _read_registry(path, teacher)
    if _dss_files(path):
        return _read_dss(path)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path, fields)
    raise TeacherError(f"replay file {path}: not a PoT outputs JSONL, a PaLM CoT folder, a records JSONL or a .duckdb")


def load_recordings(path: Path, teacher: str, fields=None) -> Recordings:
    """A replay source held in memory (evaluation backends and test fakes: small files); a replay teacher indexes
    its source instead (`RecordingIndex`)."""
    out: Recordings = defaultdict(list)
    for question, mode, response in read_recordings(path, teacher, fields):
        out[(question, mode)].append(response)
    return out


def recording_files(path: Path) -> list[Path]:
    """Every file `load_recordings` may read: the file, or the folder's files, and beside PaLM CoT files the task's
    question files (what a build's sources stamp covers, `mixdistill.incremental`)."""
    path = Path(path).expanduser()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return files + sorted({q for f in files if _DSS_FILE.match(f.name) for q in f.parent.parent.glob("*.json")})


def unmatched_recordings(recordings: Recordings, asked) -> tuple[int, list[str]]:
    """How many recorded (question, mode) pairs match none of `asked` ((question, mode) pairs), and the first few of
    their questions (normalised)."""
    asked = set(asked)  # each question once per mode: samples and modes repeat it
    normalized = {q: normalize_question(q) for q in {q for q, _ in asked}}
    wanted = {(normalized[q], m) for q, m in asked}
    missing = [q for q, m in recordings if (q, m) not in wanted]
    return len(missing), missing[:UNMATCHED_EXAMPLES]


class RecordingIndex:
    """A replay source indexed in a temporary DuckDB file of its own (never the registry), so that ten million
    recordings cost disk, not memory: (question, mode, sample index, response), looked up a chunk of requests at a
    time by a join. What the plan asks is recorded beside it, for the coverage check and the `unmatched` count."""

    def __init__(self, recorded: Recorded):
        import duckdb
        import polars as pl

        from mixdistill.registry import NO_NETWORK

        self._dir = tempfile.TemporaryDirectory(prefix="mixdistill-replay-")
        self.con = duckdb.connect(str(Path(self._dir.name) / "recordings.duckdb"),
                                  config={**NO_NETWORK, "memory_limit": INDEX_MEMORY})
        self.con.execute("CREATE TABLE raw (seq BIGINT, question VARCHAR, mode VARCHAR, response VARCHAR)")
        seq = 0
        while batch := list(itertools.islice(recorded, INDEX_BATCH)):
            questions, modes, responses = zip(*batch)
            self._insert("raw", pl.DataFrame(
                {"seq": range(seq, seq + len(batch)), "question": questions, "mode": modes, "response": responses},
                schema={"seq": pl.Int64, "question": pl.String, "mode": pl.String, "response": pl.String}))
            seq += len(batch)
        # answer i of a (question, mode) serves sample index i, in the file's order
        self.con.execute(
            "CREATE TABLE recordings AS SELECT question, mode, CAST(row_number() OVER (PARTITION BY question, mode"
            " ORDER BY seq) - 1 AS INTEGER) AS sample_index, response, seq FROM raw; DROP TABLE raw;"
            " CREATE TABLE asked (question VARCHAR, mode VARCHAR, sample_index INTEGER)"
        )
        self.modes = {m for (m,) in self.con.execute("SELECT DISTINCT mode FROM recordings").fetchall()}
        self.questions = self.con.execute("SELECT count(*) FROM (SELECT DISTINCT question, mode FROM recordings)"
                                          ).fetchall()[0][0]  # recorded (question, mode) pairs

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        with registered(self.con, "_incoming", frame):
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")

    @staticmethod
    def _frame(requests: list[TeacherRequest]) -> pl.DataFrame:
        import polars as pl

        normalized = {q: normalize_question(q) for q in {r.question for r in requests}}  # samples repeat questions
        return pl.DataFrame(
            {"request_key": [r.request_key for r in requests],
             "question": [normalized[r.question] for r in requests],
             "mode": [r.mode for r in requests], "sample_index": [r.sample_index for r in requests]},
            schema={"request_key": pl.String, "question": pl.String, "mode": pl.String, "sample_index": pl.Int32})

    def ask(self, questions: list[str], samples: dict[str, int]) -> None:
        """Record that the plan asks these questions, `samples[mode]` times in each mode."""
        import polars as pl

        normalized = [normalize_question(q) for q in questions]
        for mode, n in samples.items():
            if normalized and n:
                self._insert("asked", pl.DataFrame(
                    {"question": normalized * n, "mode": mode, "sample_index": [i for i in range(n) for _ in normalized]},
                    schema={"question": pl.String, "mode": pl.String, "sample_index": pl.Int32}))

    def answers(self, requests: list[TeacherRequest]) -> dict[str, str]:
        """request_key -> recorded answer, for the requests that have one."""
        if not requests:
            return {}
        with registered(self.con, "_wanted", self._frame(requests)):
            rows = self.con.execute("SELECT w.request_key, r.response FROM _wanted w"
                                    " JOIN recordings r USING (question, mode, sample_index)").fetchall()
        return dict(rows)

    def any_answered(self) -> bool:
        """Whether any request asked so far has a recorded answer."""
        return bool(self.con.execute("SELECT EXISTS (SELECT 1 FROM asked JOIN recordings"
                                     " USING (question, mode, sample_index))").fetchall()[0][0])

    def unmatched(self) -> tuple[int, list[str]]:
        """Recorded (question, mode) pairs that no request asked, and the first few questions, in the file's order."""
        rows = self.con.execute(
            "SELECT count(*) OVER (), question FROM (SELECT question, mode, min(seq) AS first FROM recordings"
            " GROUP BY ALL) ANTI JOIN (SELECT DISTINCT question, mode FROM asked) USING (question, mode)"
            f" ORDER BY first LIMIT {UNMATCHED_EXAMPLES}"
        ).fetchall()
        return (rows[0][0] if rows else 0), [q for _, q in rows]

    def close(self) -> None:
        self.con.close()
        self._dir.cleanup()


class ReplayTeacher(Teacher):
    provider = "replay"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self.index: RecordingIndex | None = None
        self.unmatched: tuple[int, list[str]] = (0, [])  # recorded questions no request asks, first examples
        self._texts: dict[str, str] = {}  # the answers of the requests `answerable` last let through

    def check(self) -> None:
        super().check()
        if self.index is not None:
            self.index.close()
        self.index = RecordingIndex(read_recordings(self.spec.path, self.spec.model, self.spec.fields))
        if not self.index.questions:
            raise TeacherError(f"replay file {self.spec.path}: no recorded outputs found")

    def serves(self, mode: str) -> bool:
        return self.index is not None and mode in self.index.modes

    def answerable(self, requests: list[TeacherRequest]) -> list[TeacherRequest]:
        self._texts = self.index.answers(requests)
        return [r for r in requests if r.request_key in self._texts]

    @property
    def workers(self) -> int:
        return 1

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        return [requests[i : i + 512] for i in range(0, len(requests), 512)]

    def plan_chunk(self, problems, samples: dict[str, int]) -> None:
        self.index.ask([p.question for p in problems], samples)

    def check_coverage(self) -> None:
        """Refuse a recording made for another task or mode: at least one request must have a recorded answer. Count
        the recorded questions that match no request (`unmatched`)."""
        self.unmatched = self.index.unmatched()
        if not self.index.any_answered():
            recorded = "/".join(sorted(self.index.modes))
            asked = "/".join(sorted(m for (m,) in self.index.con.execute("SELECT DISTINCT mode FROM asked").fetchall()))
            raise TeacherError(
                f"replay file {self.spec.path}: none of its {self.index.questions} recorded questions ({recorded}) "
                f"match the requested problems ({asked or 'none of its modes'})"
            )

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        return [TeacherResult(r.request_key, "ok", text=self._texts.pop(r.request_key), finish_reason="replay",
                              cost_usd=0.0, latency_s=0.0)
                for r in chunk if r.request_key in self._texts]

    async def aclose(self) -> None:
        """The generation is over: the index goes with it. A build would otherwise hold it (up to `INDEX_MEMORY`, and
        a copy of the recordings on disk) through its mix and export, whose peak is the one that matters at scale."""
        self._texts = {}
        if self.index is not None:
            self.index.close()
            self.index = None
