"""Batches of pipelines: one flow run per item id of a list, on any work pool, with the batch
submitter's thresholds, reports and purge. A batch is a campaign whose jobs need no
policy-server slot: the campaign's loop dispatches, settles, retries and follows its runs
(`flows/campaign/`), and its reads and purge are the campaign's (`flows/reports/`).

Read in this order: `items.py` (the item list, an item, its result record), `templates.py`
(`{item}` in the command or a deployment's parameters), `settings.py` (the flow's parameters),
`pipeline.py` (the `batch-item` flow: one item's command), `kind.py` (items as the loop
dispatches them), `deployments.py` (what a batch applies and checks on the server), `keep.py`
(`--keep-for`: finished runs dropped by themselves), `flow.py` (the `batch` flow), `report.py`
(the report folder: `summary.md`, a file per failed item, `failed_items.txt`).

May import: `flows/reports/`, `flows/campaign/`, `flows/slots/`, `flows/results/`, `flows/runtime/`,
`flows/evaluators/`, `flows/cloudlogging/`, `flows/naming.py` (docs/architecture.md, "Layers").
"""
