"""Stopping on request: SIGINT (Ctrl-C) and SIGTERM (`docker stop`, Slurm, Kubernetes) end a run the same way.

The handler sets `STOP` (long loops that do not run Python between steps check it: the local transformers
generation's stopping criterion, between tokens) and raises `Stopped`, a `KeyboardInterrupt`, in the main thread, so
every `except KeyboardInterrupt` / `finally` on the way out runs: buffered answers are written, the run is recorded
`interrupted`, and the CLI exits with 128 + the signal number (130 / 143).
"""

from __future__ import annotations

import signal
import threading

STOP = threading.Event()
_received: list[int] = []


class Stopped(KeyboardInterrupt):
    """A stop was asked for by a signal; `exit_code` is 128 + its number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _handler(signum, frame) -> None:
    STOP.set()
    _received.append(signum)
    raise Stopped(signum)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise `Stopped` in the main thread (call from the main thread, once, at start-up)."""
    if threading.current_thread() is not threading.main_thread():
        return
    STOP.clear()
    _received.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def exit_code_for() -> int:
    """130 for Ctrl-C (or no signal seen), 143 when SIGTERM asked for the stop."""
    return 128 + _received[0] if _received else 130


def stop_requested() -> bool:
    return STOP.is_set()


def generation_stopper():
    """A transformers `StoppingCriteriaList` that ends `generate()` at the next token once a stop is asked for; a
    generate() in a worker thread would otherwise run its whole batch (minutes) after Ctrl-C."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _OnStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), STOP.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_OnStop()])


def raise_if_stopped() -> None:
    """After a generate() that a stop may have cut short: its outputs are incomplete, so nothing of it is kept."""
    if STOP.is_set():
        raise Stopped(_received[0] if _received else signal.SIGINT)
