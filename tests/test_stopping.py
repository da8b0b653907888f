"""Stopping (issue 11): a stop flag ends a local generate() between tokens; a run whose process vanished is shown and
recorded as `interrupted` the next time the registry is opened."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mixdistill import stopping
from mixdistill.registry import Registry


def test_generation_stops_between_tokens_when_a_stop_is_asked_for():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                                      eos_token_id=1, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    out: dict = {}

    def work():
        with torch.inference_mode():
            out["ids"] = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6000, min_new_tokens=6000,
                                        do_sample=False, pad_token_id=0, stopping_criteria=stopping.generation_stopper())

    stopping.STOP.clear()
    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    stopping.STOP.set()
    try:
        worker.join(10)
        took = time.monotonic() - t0
        assert not worker.is_alive() and took < 3.0
        assert out["ids"].shape[1] < 3 + 6000  # cut short, not run to the end
        with pytest.raises(stopping.Stopped):
            stopping.raise_if_stopped()  # what the backends do next: the cut-short batch is not kept
    finally:
        stopping.STOP.clear()


def test_a_run_whose_process_is_gone_is_shown_and_recorded_interrupted(registry_path):
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from mixdistill.registry import Registry
        from mixdistill.registry.runs import start_run
        with Registry.open({str(registry_path)!r}) as reg:
            start_run(reg, "build", "killed")
        os._exit(0)  # as if killed: the run never finishes
    """)], check=True, timeout=60)
    with Registry.open(registry_path, read_only=True) as reg:
        assert reg.scalar("SELECT status FROM runs") == "running"  # stored as it was left...
        assert reg.run_statuses() == [("interrupted", 1)]  # ...shown as what it is
    with Registry.open(registry_path) as reg:  # the next writer records it
        row = reg.query("SELECT status, error, finished_at IS NOT NULL AS ended FROM runs").to_dicts()
    assert row == [{"status": "interrupted", "error": "process ended without finishing the run (killed?)",
                    "ended": True}]


def test_info_shows_stale_runs_as_interrupted(cli, registry_path):
    with Registry.open(registry_path) as reg:
        reg.execute("INSERT INTO runs (run_id, kind, status, pid, host) VALUES ('r', 'eval', 'running', ?, ?)",
                    [2**22 + 12345, __import__("socket").gethostname()])  # above any pid_max: never alive
    code, out, _ = cli("info")
    assert code == 0 and "runs: 1 interrupted" in out


@pytest.mark.parametrize("runner", ["asyncio", "uvloop"])
def test_a_signal_in_an_event_loop_cancels_at_an_await_and_cleanup_finishes(runner):
    """The signal never lands inside synchronous code: the task is cancelled at its `await`, its `finally` runs to
    the end (awaits included), then `Stopped` comes out with the signal's exit code and our handler is back."""
    import asyncio
    import os
    import signal

    run = asyncio.run if runner == "asyncio" else pytest.importorskip("uvloop").run
    pytests = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopping.install_signal_handlers()
    before = signal.getsignal(signal.SIGTERM)
    steps: list[str] = []

    async def work():
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        try:
            while True:
                steps.append("a")  # two appends with no await between them: never split by the signal
                steps.append("b")
                await asyncio.sleep(0.001)
        finally:
            await asyncio.sleep(0.01)  # a commit at the end still runs
            steps.append("cleaned up")

    try:
        with pytest.raises(stopping.Stopped) as stopped:
            stopping.run_stoppable(work(), run)
        assert stopped.value.exit_code == 143 and stopping.stop_requested()
        assert steps[-1] == "cleaned up" and steps[:-1] == ["a", "b"] * ((len(steps) - 1) // 2)
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        for sig, handler in pytests.items():
            signal.signal(sig, handler)
        stopping.STOP.clear()
