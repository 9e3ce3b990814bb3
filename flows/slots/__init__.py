"""A slot on a team's policy server: how an episode gets one, keeps it and gives it back.

Each server is a Prefect global concurrency limit (`pools.py` applies them and serves the pool
status, assembled purely in `pool_status.py`); an episode takes one lease on its server and pool
at once (`leaser.py`, on the lease engine of `flows/runtime/lease_engine.py`), tries first the
server it was steered to (`steering.py`), sleeps until a release wakes it (`wakeups.py`, fed by
the slot events of `events.py`), and never leases a sick server (`quarantine.py`, its policy in
`quarantine_policy.py`). `waiting.py` says, purely, why an episode is not playing yet.

May import: `flows/runtime/`, `flows/evaluators/` (what a failing server raises),
`flows/naming.py` (docs/architecture.md, "Layers").
"""
