"""Stopping on request: SIGINT (Ctrl-C) and SIGTERM (`docker stop`, Slurm, Kubernetes) end a run the same way.

The handler sets `STOP` (long loops that do not run Python between steps check it: the local transformers
generation's stopping criterion, between tokens) and raises `Stopped`, a `KeyboardInterrupt`, in the main thread, so
every `except KeyboardInterrupt` / `finally` on the way out runs: buffered answers are written, the run is recorded
`interrupted`, and the CLI exits with 128 + the signal number (130 / 143).

Inside an event loop (`run_stoppable`) an exception raised at an arbitrary bytecode would be a gamble: it could land
between an answer's journal write and its entry in the commit buffer, or inside the loop's own machinery. There the
signals are the loop's: the main task is cancelled at its next `await`, its `finally` blocks stop the requests in
flight and commit what was received, and `Stopped` is raised once the loop has finished.
"""

from __future__ import annotations

import asyncio
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


def run_stoppable(coro, runner=asyncio.run):
    """`runner(coro)` (asyncio.run, uvloop.run) with SIGINT and SIGTERM cancelling the coroutine's task at an
    `await`; raises `Stopped` after the task's cleanup has run. Off the main thread, signals are not ours to take."""
    if threading.current_thread() is not threading.main_thread():
        return runner(coro)
    received: list[int] = []

    async def main():
        task, loop = asyncio.current_task(), asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            STOP.set()
            _received.append(signum)
            received.append(signum)
            task.cancel()

        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in before:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await coro
        except asyncio.CancelledError:
            if received:
                raise Stopped(received[0]) from None
            raise
        finally:
            for sig, handler in before.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)  # the loop leaves the default handler behind, not the one we had

    return runner(main())


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
