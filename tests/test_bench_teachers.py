"""`mixdistill bench teachers` runs the raw aiohttp floor and mixdistill against one fake server and prints both."""

from __future__ import annotations

import re

import pytest


def test_bench_teachers_reports_the_floor_and_client_cpu(cli):
    code, out, err = cli("bench", "teachers", "--requests", "60", "--concurrency", "8", "--latency", "0.02")
    assert code == 0, err
    figures = dict(re.findall(r"│ ([a-z][\w /]+?)\s+│ ([\d.]+%?x?)\s+│", out))
    assert figures["requests"] == "60" and float(figures["ideal req/s"]) == 400.0
    for name in ("mixdistill share of ideal", "raw share of ideal", "mixdistill share of raw"):
        assert figures[name].endswith("%") and float(figures[name][:-1]) > 0
    assert 0 < float(figures["raw CPU ms/request"]) and 0 < float(figures["mixdistill CPU ms/request"])
    assert "of the raw client" in out and "client CPU" in out
    # the cold `mixdistill generate` as a whole process: its time outside the requests, from the server's clock
    before, after = float(figures["process s before first request"]), float(figures["process s after last answer"])
    assert 0 < before and 0 < after and float(figures["process s outside requests"]) == pytest.approx(before + after, abs=2e-3)
    assert before < float(figures["cold generate process s"])
    assert 0 < float(figures["console script start s"]) < before  # start-up is part of the time to the first request
    assert 0 <= float(figures["run_generation s before first request"]) < before
    assert "outside the requests (target < 1 s" in " ".join(out.split())  # rich wraps long lines
    runs = [float(x) for x in re.search(r"│ outside requests, 3 runs\s+│ ([\d., ]+?)\s+│", out).group(1).split(", ")]
    assert len(runs) == 3 and sorted(runs)[1] == pytest.approx(float(figures["process s outside requests"]), abs=6e-3)
