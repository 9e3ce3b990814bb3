"""The episode screen's data: the run, its states and attempts, the server it held, its logs and
metrics, and why it is not playing yet (through `flows/reports/`, the same as
`evalq campaign status`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

from flows import naming
from flows.slots.events import SlotEvent
from flows.slots.waiting import WaitExplanation
from tui.gateway import Gateway, episode_row, flow_run_url, run_filter
from tui.logs import LogReads
from tui.models import EpisodeDetail, StateChange

logger = logging.getLogger("evaltui.waiting")


async def episode_detail(gateway: Gateway, logs: LogReads, flow_run_id: UUID) -> EpisodeDetail:
    client = await gateway.client()
    run = await client.read_flow_run(flow_run_id)
    states = await client.read_flow_run_states(flow_run_id)
    row = episode_row(run)
    job = run.parameters.get("job") or {}
    job_id = job.get("id") or naming.job_id_of_run_name(run.name)
    siblings = await gateway.read_runs(run_filter(gateway.tags(), like=job_id), limit=50)
    attempts = sorted((episode_row(r) for r in siblings if naming.job_id_of_run_name(r.name) == job_id), key=lambda r: r.attempt)
    acquired = await gateway.events({
        "occurred": {"since": (datetime.now(timezone.utc) - timedelta(days=30)).isoformat()},
        "event": {"name": [naming.SLOT_ACQUIRED]},
        "related": {"id": [naming.flow_run_resource_id(flow_run_id)]},
        "order": "DESC",
    }, limit=1)
    server = SlotEvent.from_event(acquired[0]).address if acquired else None
    lines = await logs.backfill(limit=200, flow_run_id=flow_run_id)
    metrics, path = read_metrics(run.parameters)
    return EpisodeDetail(
        run=row,
        parameters=dict(run.parameters),
        states=[StateChange(s.timestamp, s.type.value, s.name or "", s.message or "") for s in sorted(states, key=lambda s: s.timestamp)],
        attempts=attempts,
        server=server,
        logs=lines,
        metrics=metrics,
        metrics_path=path,
        ui_url=flow_run_url(flow_run_id),
        waiting=await why_waiting(client, run),
    )


def read_metrics(parameters: dict) -> tuple[dict | None, str | None]:
    """The episode's metrics file, when the flow-run parameters locate it and it exists locally."""
    from generate.models import metrics_path

    job, results_dir = parameters.get("job") or {}, parameters.get("results_dir")
    payload = job.get("payload") or {}
    if not results_dir or not payload.get("team_slug"):
        return None, None
    path = metrics_path(results_dir, payload["team_slug"], payload["task"], payload["instance_id"])
    try:
        return json.loads(Path(path).read_text()), str(path)
    except (OSError, ValueError):
        return None, str(path)


async def why_waiting(client, run) -> WaitExplanation | None:
    """Why the episode run does not play yet (None when it plays, ended, or on any error:
    the detail screen shows the rest)."""
    from flows.reports.status import campaign_status

    campaign = naming.tag_value(run.tags, "campaign")
    if not campaign or run.state is None or run.state.is_final():
        return None
    try:
        status = await campaign_status(client, campaign, run_ids={str(run.id)}, most=1)
    except Exception as exc:  # noqa: BLE001 - an explanation is a help, never a reason to fail the screen
        logger.debug("why waiting: %s", exc)
        return None
    return status.explanations[0] if status.explanations else None
