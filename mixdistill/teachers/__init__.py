"""Teachers: one backend per provider behind one async protocol (`Teacher`, in `base`).

`make_teacher(spec)` picks the backend; `Teacher.check()` must run before the first request (it reads the API key
from the environment and loads local models or recordings).
"""

from __future__ import annotations

from mixdistill.recipe import TeacherSpec
from mixdistill.teachers.anthropic_api import AnthropicTeacher
from mixdistill.teachers.base import (
    BatchStatus,
    Teacher,
    TeacherError,
    TeacherFatalError,
    TeacherRequest,
    TeacherResult,
    request_key,
    teacher_id,
)
from mixdistill.teachers.openai_api import OpenAICompatibleTeacher, OpenAITeacher
from mixdistill.teachers.prices import PriceTable
from mixdistill.teachers.replay import ReplayTeacher
from mixdistill.teachers.transformers_local import TransformersTeacher

BACKENDS: dict[str, type[Teacher]] = {
    cls.provider: cls
    for cls in (OpenAITeacher, AnthropicTeacher, OpenAICompatibleTeacher, TransformersTeacher, ReplayTeacher)
}


def make_teacher(spec: TeacherSpec, prices: PriceTable | None = None) -> Teacher:
    try:
        backend = BACKENDS[spec.provider]
    except KeyError:
        raise TeacherError(f"teacher {spec.label!r}: unknown provider {spec.provider!r}; known: {', '.join(BACKENDS)}") from None
    return backend(spec, prices)


__all__ = [
    "BACKENDS",
    "BatchStatus",
    "PriceTable",
    "Teacher",
    "TeacherError",
    "TeacherFatalError",
    "TeacherRequest",
    "TeacherResult",
    "make_teacher",
    "request_key",
    "teacher_id",
]
