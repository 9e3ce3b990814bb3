"""Talking to Prefect and running it: which server a command uses (`discovery.py`: the one rule),
one API probe (`api.py`) and retry rule (`api_retry.py`: hiccups and outages of up to
`api_health.py`'s budget, said once; `outages.py`: Prefect's events and log workers through
one), the lease engine (`lease_engine.py`), what a server needs before episodes run
(`provisioning.py`: work pools, deployments, zombie automation), the embedded server
(`embedded_server.py`, its database template and `server.json` record), the user's `evalq
server` (`user_server.py`), this folder's embedded database and who serves it
(`folder_server.py`), the local stack (`local_stack.py`), processes and addresses (`host.py`,
`process_groups.py`) and keeping one alive (`supervisor.py`), who serves a work pool and which
runners live (`liveness.py`), memory (`memory.py`), PostgreSQL (`postgres.py`).

May import: `flows/naming.py` only (docs/architecture.md, "Layers"). `workpools/` builds on it.
"""
