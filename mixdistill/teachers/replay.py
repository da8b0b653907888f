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

import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

from mixdistill.teachers.base import Teacher, TeacherError, TeacherRequest, TeacherResult

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
UNMATCHED_EXAMPLES = 3


def _dss_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.glob("*_CoT_*.json"))
    return [f for f in files if _DSS_FILE.match(f.name)]


def _load_dss(path: Path) -> Recordings:
    out: Recordings = defaultdict(list)
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
                out[(normalize_question(inputs[offset + i]), "cot")].append(completion.split("Q:", 1)[0].strip())
    return out


def _records(path: Path):
    """(line number, record) pairs from a JSONL file, or from a .json file holding one list of records."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, list):
            yield from enumerate(whole, start=1)
            return
    for n, line in enumerate(text.splitlines(), start=1):
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


def _load_jsonl(path: Path, fields=None) -> Recordings:
    out: Recordings = defaultdict(list)
    for n, rec in _records(path):
        if isinstance(rec, dict) and fields is not None:
            rec = _mapped(rec, fields)
        if not isinstance(rec, dict) or "question" not in rec:
            continue  # header lines (a PoT file's "demonstration"/"prompt" lines) carry no problem
        if "generated" in rec:  # Program-of-Thoughts outputs
            question = f"{rec.get('passage', '')} {rec['question']}"
            programs = rec["generated"] if isinstance(rec["generated"], list) else [rec["generated"]]
            out[(normalize_question(question), "pot")].extend(str(p) for p in programs)
        elif "response" in rec and rec.get("mode") in ("cot", "pot"):
            out[(normalize_question(rec["question"]), rec["mode"])].append(str(rec["response"]))
        else:
            names = ("'mode' + 'response'" if fields is None
                     else f"{fields.mode!r} + {fields.response!r} (the recipe's fields:)")
            raise TeacherError(f"replay file {path}: record {n}: need 'generated' or {names} fields")
    return out


def _load_registry(path: Path, teacher: str) -> Recordings:
    from mixdistill.registry import Registry

    out: Recordings = defaultdict(list)
    with Registry.open(path, read_only=True) as reg:
        df = reg.query(
            "SELECT p.question, g.mode, g.response_text FROM generations g"
            " JOIN problems p USING (problem_id) JOIN teachers t USING (teacher_id)"
            " WHERE g.status = 'ok' AND (t.name = ? OR t.model = ?) ORDER BY g.problem_id, g.mode, g.sample_index",
            [teacher, teacher],
        )
    for question, mode, text in df.iter_rows():
        out[(normalize_question(question), mode)].append(text)
    return out


def load_recordings(path: Path, teacher: str, fields=None) -> Recordings:
    path = Path(path).expanduser()
    if not path.exists():
        raise TeacherError(f"replay file not found: {path}")
    if path.suffix == ".duckdb":
        return _load_registry(path, teacher)
    if _dss_files(path):
        return _load_dss(path)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return _load_jsonl(path, fields)
    raise TeacherError(f"replay file {path}: not a PoT outputs JSONL, a PaLM CoT folder, a records JSONL or a .duckdb")


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


class ReplayTeacher(Teacher):
    provider = "replay"

    def __init__(self, spec, prices=None):
        super().__init__(spec, prices)
        self.recordings: Recordings = {}
        self.unmatched: tuple[int, list[str]] = (0, [])  # recorded questions no request asks, first examples

    def check(self) -> None:
        super().check()
        self.recordings = load_recordings(self.spec.path, self.spec.model, self.spec.fields)
        if not self.recordings:
            raise TeacherError(f"replay file {self.spec.path}: no recorded outputs found")

    def lookup(self, r: TeacherRequest) -> str | None:
        answers = self.recordings.get((normalize_question(r.question), r.mode), [])
        return answers[r.sample_index] if r.sample_index < len(answers) else None

    def serves(self, mode: str) -> bool:
        return any(m == mode for _, m in self.recordings)

    def answerable(self, r: TeacherRequest) -> bool:
        return self.lookup(r) is not None

    @property
    def workers(self) -> int:
        return 1

    def chunks(self, requests: list[TeacherRequest]) -> list[list[TeacherRequest]]:
        return [requests[i : i + 512] for i in range(0, len(requests), 512)]

    def check_coverage(self, requests: list[TeacherRequest]) -> None:
        """Refuse a recording made for another task or mode: at least one request must have a recorded answer. Count
        the recorded questions that match no request (`unmatched`)."""
        self.unmatched = unmatched_recordings(self.recordings, ((r.question, r.mode) for r in requests))
        if not any(self.answerable(r) for r in requests):
            recorded = "/".join(sorted({m for _, m in self.recordings}))
            asked = "/".join(sorted({r.mode for r in requests})) or "none of its modes"
            raise TeacherError(
                f"replay file {self.spec.path}: none of its {len(self.recordings)} recorded questions ({recorded}) "
                f"match the requested problems ({asked})"
            )

    async def _call(self, chunk: list[TeacherRequest]) -> list[TeacherResult]:
        out = []
        for r in chunk:
            text = self.lookup(r)
            if text is not None:
                out.append(TeacherResult(r.request_key, "ok", text=text, finish_reason="replay", cost_usd=0.0, latency_s=0.0))
        return out
