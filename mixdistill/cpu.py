"""Torch CPU threads for training and evaluation (`threads:` in train and eval recipes, `--threads` on the CLI), and
whether the CPU computes in bf16 natively.

Torch's default is one OpenMP thread per core. On a small machine that other processes share, those threads
spin-wait on each other's barriers whenever one of them is descheduled, and generation slows down instead of
speeding up. The default here is measured with `mixdistill bench eval --model <SmolLM2 folder> --threads 1
--threads 2` (numbers in the README's "Training and evaluation" section).
"""

from __future__ import annotations

import os

from mixdistill.errors import MixdistillError

SMALL_MACHINE = 4  # cores up to which one thread is left free for the rest of the machine


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """All cores but one on a small machine (2 cores: 1 thread), else every core torch would use anyway."""
    cores = available_cores()
    return max(1, cores - 1) if cores <= SMALL_MACHINE else cores


def check_threads(value: int | None, field: str) -> int | None:
    """`field: ...` as one line when the value cannot be a thread count."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise MixdistillError(f"{field}: the number of CPU threads must be a whole number of at least 1, not {value!r}")
    return value


def set_threads(value: int | None) -> int:
    """Set torch's CPU threads (None: `default_threads()`); returns the number set."""
    import torch

    n = value if value is not None else default_threads()
    torch.set_num_threads(n)
    return n


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16, as oneDNN sees it). There a bf16 matmul runs
    3-5x faster than fp32 (README "Evaluation speed"); elsewhere bf16 is emulated and slower than fp32."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())
