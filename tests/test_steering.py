"""Steering flexible episodes toward the servers that no constrained episode needs."""

from flows.slots.steering import ExclusiveDemand
from generate.models import Resources
from kit import make_job

RESOURCES = Resources.model_validate({
    "lab_1": [{"host": "h", "port": 1, "compatible_task": ["stack", "pick"]},  # the only one that stacks
              {"host": "h", "port": 2, "capacity": 2, "not_compatible_task": "stack"}],
    "lab_2": [{"host": "h", "port": 3}],                                 # a third pool
})


def test_a_flexible_job_prefers_the_server_with_the_least_exclusive_work(tmp_path):
    demand = ExclusiveDemand(RESOURCES)
    stacking = [make_job(tmp_path, "lab", "stack", i, ["lab_1"]) for i in range(2)]
    picking_here = [make_job(tmp_path, "lab", "pick", i, ["lab_2"]) for i in range(4)]
    anywhere = make_job(tmp_path, "lab", "pick", 9, ["lab_1", "lab_2"])  # fits three servers
    for job in stacking + picking_here:
        demand.add(job)
    assert demand.servers(anywhere) == ["h:1", "h:2", "h:3"]
    assert demand.exclusive == {"h:1": 2, "h:3": 4}
    assert demand.preference(anywhere) == ["h:2", "h:1", "h:3"]  # 0 per slot, then 2, then 4
    for job in stacking:
        demand.settled(job)
    assert demand.preference(anywhere) == ["h:1", "h:2", "h:3"]  # nothing left that only h:1 can do
