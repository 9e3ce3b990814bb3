"""The contracts' owners: every builder parses back what it built (no Prefect server needed)."""

from __future__ import annotations

import datetime as dt
import json
from uuid import uuid4

from flows import naming
from flows.results.metrics_files import EpisodeProvenance, metrics_document, read_provenance
from flows.slots.events import SlotEvent, holders_from_events
from generate.models import Server

NOW = dt.datetime(2026, 11, 22, 5, 0, tzinfo=dt.timezone.utc)


def test_names_parse_back_to_what_built_them():
    server = Server(host="10.0.0.7", port=8001)
    assert naming.address_of_limit(naming.server_limit(server)) == "10.0.0.7:8001"
    assert naming.address_of_limit(naming.pool_limit("a_1")) is None
    assert naming.pool_of_limit(naming.pool_limit("a_1")) == "a_1"
    assert naming.is_evalq_limit(naming.server_limit(server)) and not naming.is_evalq_limit("other")
    assert naming.address_of_resource_id(naming.server_resource_id("h:1")) == "h:1"
    run_id = uuid4()
    assert naming.flow_run_id_of_resource_id(naming.flow_run_resource_id(run_id)) == str(run_id)
    assert naming.campaign_of_plan_variable(naming.campaign_plan_variable("final")) == "final"


def test_a_slot_event_reads_back_as_emitted():
    run_id = str(uuid4())
    event = SlotEvent(name=naming.SLOT_ACQUIRED, address="h:1", pool="p_1", job_id="t/pick/1", lease_id="lease-1",
                      campaign="c", flow_run_id=run_id, waited_seconds=0.5, occurred=NOW)
    sent = event.as_json()
    assert sent["resource"] == {"prefect.resource.id": "evalq.server.h:1", "evalq.server": "h:1", "evalq.pool": "p_1"}
    assert sent["payload"] == {"job_id": "t/pick/1", "lease_id": "lease-1", "waited_seconds": 0.5}
    assert SlotEvent.from_event(json.loads(json.dumps(sent))) == event.model_copy(update={"campaign": None})


def test_holders_are_the_leases_whose_latest_event_is_an_acquisition():
    def event(name, lease, minutes):
        return SlotEvent(name=name, address="h:1", job_id=f"job-{lease}", lease_id=lease, flow_run_id=f"run-{lease}",
                         occurred=NOW + dt.timedelta(minutes=minutes)).as_json()

    events = [event(naming.SLOT_ACQUIRED, "a", 0), event(naming.SLOT_RELEASED, "a", 1), event(naming.SLOT_ACQUIRED, "b", 2)]
    (holder,) = holders_from_events(events)
    assert (holder.job_id, holder.flow_run_id, holder.lease_id, holder.since) == ("job-b", "run-b", "b", NOW + dt.timedelta(minutes=2))


def test_the_metrics_files_evalq_block_reads_back(tmp_path):
    provenance = EpisodeProvenance(
        job_id="t/pick/1", team="T", team_slug="t", track="standard", task="pick", instance_id=1, pool="p_1",
        server="h:1", campaign="c", evaluator="sim", waited_seconds=0.1, held_seconds=4.2, finished_at=1.0,
    )
    path = tmp_path / "pick_1.json"
    path.write_text(json.dumps(metrics_document({"success": True}, provenance)))
    assert json.loads(path.read_text())["success"] is True
    assert read_provenance(path) == provenance
    path.write_text(json.dumps({"success": True}))
    assert read_provenance(path) is None


def test_the_campaign_plan_reads_what_it_wrote_and_nothing_else():
    from flows.campaign.plan import CampaignPlan, plan_value
    from generate.models import Resources

    resources = Resources.model_validate({"p_1": [{"host": "h", "port": 1}, {"host": "h", "port": 2}]})
    plan = CampaignPlan.read(plan_value(3, resources, "c"))
    assert (plan.total, plan.name, plan.server_pools()) == (3, "c", {"h:1": "p_1", "h:2": "p_1"})
    assert CampaignPlan.read(None) == CampaignPlan.read("text") == CampaignPlan.read({"total": "many"}) == CampaignPlan()
