"""Batch API builds hold one batch's requests, not the plan's: batches go out while the plan is walked, each stored
with its requests (`batch_requests`, migration m010), and each is ingested from those rows, a restart included."""

from __future__ import annotations

import asyncio
import json

import pytest

from fakes.openai_server import fake_openai
from fakes.recipes import openai_teacher, recipe, synthetic_task
from fakes.registries import registry_at_version
from mixdistill import generate
from mixdistill.generate import Plan, plan_generation, run_generation
from mixdistill.registry import Registry
from mixdistill.tasks import custom

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _spec(tmp_path, srv, problems: int):
    return recipe([synthetic_task(tmp_path, problems)], [openai_teacher(srv, batch=True, batch_poll_s=0.02)],
                  samples={"cot": 1, "pot": 1})


def test_batches_go_out_while_the_plan_is_walked_and_are_ingested_from_their_stored_requests(
        tmp_path, registry_path, monkeypatch):
    monkeypatch.setattr(generate, "BATCH_MAX_REQUESTS", 4)
    monkeypatch.setattr(custom, "CHUNK", 3)  # 7 problems: plan chunks of 3, 3 and 1 problems (6, 6, 2 requests)
    submitted_by_chunk = []
    walk = Plan.chunks

    with fake_openai(api_key=KEY, batch_delay=0.05) as srv:
        def chunks(self):
            for chunk in walk(self):
                submitted_by_chunk.append(len(srv.batches))  # batches the provider holds as the chunk is read
                yield chunk

        monkeypatch.setattr(Plan, "chunks", chunks)
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, _spec(tmp_path, srv, 7), progress=False)
            batches = reg.query("SELECT batch_id, status FROM batches ORDER BY created_at").rows()
            members = reg.query("SELECT batch_id, count(*) AS n FROM batch_requests GROUP BY ALL")
            unmatched = reg.scalar("SELECT count(*) FROM generations g ANTI JOIN batch_requests r"
                                   " ON g.request_key = r.request_key AND g.batch_id = r.batch_id")
            identities = reg.scalar("SELECT count(*) FROM generations g JOIN batch_requests r USING (request_key)"
                                    " WHERE (g.problem_id, g.mode, g.sample_index, g.prompt_id, g.task)"
                                    " = (r.problem_id, r.mode, r.sample_index, r.prompt_id, r.task)")
        sizes = sorted(b["request_counts"]["total"] for b in srv.batches.values())
    assert report.ok == 14 and report.errors == 0
    assert submitted_by_chunk == [0, 1, 3]  # the 1st batch before the 2nd chunk is read, the 3rd before the last
    assert sizes == [2, 4, 4, 4] and sorted(members["n"].to_list()) == sizes
    assert [s for _, s in batches] == ["ingested"] * 4
    assert unmatched == 0 and identities == 14


def test_a_batch_pending_in_a_schema_9_json_list_is_collected_once_after_migration(tmp_path, registry_path):
    """A batch submitted by an older mixdistill (its keys a JSON list in `batches.request_keys`) is neither sent
    again nor lost: m010 moves its keys to `batch_requests`, the next build fills in their identities and ingests it,
    and submits only the requests no batch holds."""
    with fake_openai(api_key=KEY, batch_delay=0) as srv:
        spec = _spec(tmp_path, srv, 5)
        plan = plan_generation(spec)
        (teacher,) = plan.teachers
        requests = plan.requests[teacher.teacher_id]
        old = requests[:6]  # of 10

        async def submit():
            try:
                return await teacher.submit_batch(old)
            finally:
                await teacher.aclose()

        old_id = asyncio.run(submit())
        con = registry_at_version(registry_path, 9)
        con.execute("INSERT INTO batches (batch_id, teacher_id, provider, status, request_keys, run_id)"
                    " VALUES (?, ?, 'openai', 'submitted', ?, 'old')",
                    [old_id, teacher.teacher_id, json.dumps([r.request_key for r in old] + ["of-another-recipe"])])
        con.close()
        with Registry.open(registry_path) as reg:
            report = run_generation(reg, spec, progress=False)
            by_batch = dict(reg.query("SELECT batch_id, count(*) FROM generations GROUP BY ALL").rows())
            statuses = dict(reg.query("SELECT batch_id, status FROM batches").rows())
            unknown = reg.query("SELECT request_key FROM batch_requests WHERE problem_id IS NULL")["request_key"]
        submissions = [s for s in srv.requests_seen if s["method"] == "POST" and s["path"] == "/v1/batches"]
    assert report.ok == 10 and len(submissions) == 2  # the old batch, and one for the 4 requests it did not hold
    (new_id,) = set(statuses) - {old_id}
    assert by_batch == {old_id: 6, new_id: 4}
    assert statuses == {old_id: "ingested", new_id: "ingested"}
    assert unknown.to_list() == ["of-another-recipe"]  # not this recipe's: no identity, no row
