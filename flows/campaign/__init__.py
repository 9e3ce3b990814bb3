"""The campaign: from a jobs list to one episode flow run per job, just in time.

Read in this order: `settings.py` (the flow's parameters), `inputs.py` and `selection.py`
(jobs.json, resources.json, `--only`), `plan.py` (what the campaign announces), `kinds.py` (what
the loop asks of a kind of job; episodes are one kind: `episodes.py`, batch items another:
`flows/batch/`), `dispatch.py` (which job next, pure) with `prefetch.py` (how far ahead) and
`thresholds.py` (when to stop and resume), `history.py` (what a new invocation does with old
runs; a run's attempts from its state history: `run_history.py`), `loop.py` (dispatch, read the
runs, settle them: `outcomes.py`; the pause switch: `pause.py`; rerun requests:
`rerun_requests.py`; settled runs rerun from outside, followed again: `settled.py`; runs held
by a runner gone: `orphans.py`), `outputs.py` (stats line, failed.txt, artifacts), `flow.py`.

May import: `flows/slots/`, `flows/results/`, `flows/runtime/`, `flows/cloudlogging/`,
`flows/naming.py` (docs/architecture.md, "Layers"). Not the episode flow: episodes are
created from their deployment by name.
"""


def __getattr__(name: str):
    """`flows.campaign:campaign`, the entrypoint stored by deployments (prefect.yaml), without
    loading the flow (and Prefect) for a reader of the contracts in this package."""
    if name == "campaign":
        from flows.campaign.flow import campaign

        return campaign
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
