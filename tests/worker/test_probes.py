"""A standalone worker's /healthz, /readyz and /metrics."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from worker.probes import probe_app
from worker.process import build_workers, running_workers
from worker.settings import Settings


async def test_probes_follow_the_temporal_workers(client: Client, settings: Settings) -> None:
    workers = build_workers(client, settings)
    transport = httpx.ASGITransport(app=probe_app(client, workers))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
        async with running_workers(workers):
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "temporal": "ok"}
            metrics = await http.get("/metrics")
            assert "skyrun_stage_duration_seconds" in metrics.text
        # Stopped (as after a fatal error): the liveness probe fails, so it gets restarted.
        stopped = await http.get("/healthz")
        assert stopped.status_code == 503
        assert settings.temporal_task_queue in stopped.json()["stopped"]
        assert (await http.get("/readyz")).status_code == 503
