"""Teacher fleets: an openai-compatible teacher over several servers, one of which dies mid-build."""

from __future__ import annotations

import threading
import time

from fakes.openai_server import fake_openai
from fakes.recipes import recipe, synthetic_task
from mixdistill.generate import run_generation
from mixdistill.recipe import TeacherSpec
from mixdistill.registry import Registry
from mixdistill.teachers import teacher_id
from mixdistill.teachers.fleet import FAILS_TO_REST, REST_S, Endpoint, Fleet


def test_routing_fewest_in_flight_rests_a_failing_server_and_tries_it_again():
    now = [0.0]
    fleet = Fleet([Endpoint(u, None) for u in "abc"], clock=lambda: now[0])
    a, b, c = fleet.endpoints
    a.in_flight, b.in_flight, c.in_flight = 2, 1, 3
    assert fleet.pick() is b
    for _ in range(FAILS_TO_REST):
        fleet.failed(b)
    assert fleet.pick() is a  # b rests although it has the fewest in flight
    now[0] += REST_S + 0.01
    assert fleet.pick() is b  # back after its rest
    for _ in range(FAILS_TO_REST):
        fleet.failed(b)
    assert b.resting_until == now[0] + 2 * REST_S  # failing again on its return: a longer rest
    fleet.ok(b)
    assert (b.failures, b.rests, b.answered) == (0, 0, 1)
    for e in (a, c):
        for _ in range(FAILS_TO_REST):
            fleet.failed(e)
    assert fleet.pick() is a  # all resting: the one back soonest is tried


def test_a_fleet_with_a_server_dying_mid_build_completes_and_identity_ignores_endpoints(tmp_path, registry_path):
    total = 90
    with fake_openai(latency=0.04) as s1, fake_openai(latency=0.04) as s2, fake_openai(latency=0.04) as s3:
        urls = [s1.base_url, s2.base_url, s3.base_url]
        teacher = {"provider": "openai-compatible", "model": "qwen3-8b", "base_urls": urls, "max_concurrency": 6,
                   "retry_backoff_s": 0.01}
        r = recipe([synthetic_task(tmp_path, total)], [teacher], modes=["cot"], samples={"cot": 1})

        def kill_s2_after_some_answers():
            while len(s2.generation_requests) < 8:
                time.sleep(0.005)
            s2.stop()  # connections reset, then refused

        killer = threading.Thread(target=kill_s2_after_some_answers, daemon=True)
        killer.start()
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, r, progress=False)
            stored = reg.query("SELECT teacher_id, count(*) AS n, count_if(status = 'ok') AS ok FROM generations GROUP BY 1")
        killer.join(5)
        counts = [len(s.generation_requests) for s in (s1, s2, s3)]
    assert report.ok == total and report.errors == 0
    assert stored.rows() == [(teacher_id(TeacherSpec.model_validate(teacher)), total, total)]
    assert counts[1] < counts[0] and counts[1] < counts[2]  # the dead server was taken out
    assert min(counts[0], counts[2]) >= total // 4  # the live ones shared the work (fewest in flight first)
    # one identity and one set of cache keys whichever servers the fleet lists
    moved = TeacherSpec.model_validate({**teacher, "base_urls": [urls[2], "http://10.0.0.7:8000/v1"]})
    assert teacher_id(moved) == teacher_id(TeacherSpec.model_validate(teacher))
