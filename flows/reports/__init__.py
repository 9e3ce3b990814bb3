"""Reading a campaign afterwards (or while it runs) from the Prefect server: its runs and report
(`runs.py`, grouped purely in `report.py`), its jobs counted in a few queries (`jobs.py`), why
episodes wait (`status.py`), every campaign (`listing.py`), and deleting what a settled
campaign left on the server (`purge.py`).

May import: `flows/campaign/`, `flows/slots/`, `flows/results/`, `flows/runtime/`,
`flows/naming.py` (docs/architecture.md, "Layers").
"""
