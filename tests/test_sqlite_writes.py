"""Colliding writes on the embedded server wait their turn instead of failing with 503
(flows/runtime/prefect_serve.py: Prefect's SQLite transactions begin IMMEDIATE)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

BURST = 40


async def burst(api_url: str) -> list[int]:
    """Flow-run creations and slot leases, all at once, without the client's 503 retries."""
    async with httpx.AsyncClient(base_url=api_url, timeout=120) as http:
        flow = (await http.post("/flows/", json={"name": "collide"})).raise_for_status().json()
        limit = f"collide-{uuid.uuid4().hex[:8]}"
        (await http.post("/v2/concurrency_limits/", json={"name": limit, "limit": BURST})).raise_for_status()
        creations = [http.post("/flow_runs/", json={"flow_id": flow["id"]}) for _ in range(BURST)]
        leases = [
            http.post("/v2/concurrency_limits/increment-with-lease",
                      json={"names": [limit], "slots": 1, "mode": "concurrency", "lease_duration": 60})
            for _ in range(BURST)
        ]
        responses = await asyncio.gather(*creations, *leases)
        return [response.status_code for response in responses]


def test_a_burst_of_colliding_writes_gets_no_503(prefect_server):
    codes = asyncio.run(burst(prefect_server.api_url))
    assert len(codes) == 2 * BURST
    assert set(codes) <= {200, 201}, f"answers: {sorted(set(codes))} ({codes.count(503)} x 503)"
