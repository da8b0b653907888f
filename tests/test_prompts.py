"""Prompts: files per task and mode, exemplars that are right, content-hashed ids, chat and completion rendering."""

from __future__ import annotations

import re

import pytest

from mixdistill.prompts import MODES, PROMPTS_DIR, PromptError, load_prompt, prompt_task

TASKS = ("svamp", "gsm8k", "asdiv", "strategyqa")
ANSWER = re.compile(r"The answer is (yes|no|-?[\d.]+)\.$")


def run_program(program: str):
    scope: dict = {}
    exec(program, scope)  # our own exemplar programs
    return scope["solution"]() if "solution" in scope else scope["ans"]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_both_modes_with_exemplars_that_agree(task):
    """Each PoT exemplar program, run, gives the answer its CoT twin states: exemplars teach correct reasoning."""
    cot = load_prompt(task, "cot", 5)
    pot = load_prompt(task, "pot", 5)
    assert [e.question for e in cot.exemplars] == [e.question for e in pot.exemplars]
    for c, p in zip(cot.exemplars, pot.exemplars):
        m = ANSWER.search(c.rationale)
        assert m, f"{task} CoT exemplar must end with 'The answer is X.': {c.rationale[-60:]!r}"
        value = run_program(p.rationale)
        if m.group(1) in ("yes", "no"):
            assert value is (m.group(1) == "yes"), c.question
        else:
            assert value == pytest.approx(float(m.group(1))), c.question
        assert "ans" in p.rationale or "def solution" in p.rationale


def test_instructions_say_what_the_verifier_reads():
    for task in TASKS:
        assert "The answer is" in load_prompt(task, "cot", 0).system
        pot = load_prompt(task, "pot", 0).system
        assert "`ans`" in pot or "solution()" in pot


def test_prompt_id_is_a_content_hash_of_what_is_sent():
    a = load_prompt("svamp", "cot", 4)
    assert a.prompt_id == load_prompt("svamp", "cot", 4).prompt_id
    ids = {load_prompt(t, m, s).prompt_id for t in TASKS for m in MODES for s in (2, 4)}
    assert len(ids) == len(TASKS) * len(MODES) * 2
    assert re.fullmatch(r"[0-9a-f]{16}", a.prompt_id)
    row = a.to_row()
    assert row["prompt_id"] == a.prompt_id and row["mode"] == "cot" and "exemplars" in row


def test_chat_rendering():
    p = load_prompt("gsm8k", "pot", 3)
    msgs = p.chat("How many eggs are left?")
    assert msgs[0]["role"] == "system" and msgs[0]["content"] == p.system
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1]["content"] == "Question: How many eggs are left?"
    assert all(m["content"].startswith("```python\n") and m["content"].endswith("\n```") for m in msgs[2:-1:2])
    cot = load_prompt("gsm8k", "cot", 1).chat("q?")
    assert not cot[2]["content"].startswith("```")


def test_completion_rendering_ends_where_the_model_continues():
    p = load_prompt("svamp", "cot", 2)
    text = p.completion("What is 2 plus 3?")
    assert text.startswith(p.system)
    assert text.endswith("Question: What is 2 plus 3?\nAnswer:\n")
    assert text.count("Question:") == 3
    assert p.exemplars[0].rationale in text


def test_question_with_braces_is_inserted_verbatim():
    assert load_prompt("svamp", "cot", 0).user_message("a {b} c") == "Question: a {b} c"


def test_custom_tasks_fall_back_by_answer_type():
    assert prompt_task("svamp", "number") == "svamp"
    assert prompt_task("my-task", "number") == "gsm8k"
    assert prompt_task("my-yes-no", "bool") == "strategyqa"


def test_bad_prompt_files_give_one_clear_line(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "cot.yaml").write_text("system: ''\nuser: 'Q: {question}'\n")
    with pytest.raises(PromptError, match=r"cot.yaml: system: the prompt template is empty"):
        load_prompt("t", "cot", 0, root=tmp_path)
    (tmp_path / "t" / "pot.yaml").write_text("system: 'write code'\nuser: 'no placeholder'\n")
    with pytest.raises(PromptError, match=r"user: the template must contain \{question\}"):
        load_prompt("t", "pot", 0, root=tmp_path)
    with pytest.raises(PromptError, match="shots: 9 requested"):
        load_prompt("svamp", "cot", 9)
    with pytest.raises(PromptError, match="not found"):
        load_prompt("nope", "cot", 1, root=tmp_path)


def test_prompt_files_are_package_data():
    files = sorted(p.relative_to(PROMPTS_DIR).as_posix() for p in PROMPTS_DIR.glob("*/*.yaml"))
    assert files == sorted(f"{t}/{m}.yaml" for t in TASKS for m in MODES)
