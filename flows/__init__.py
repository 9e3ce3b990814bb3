"""The Prefect flows of eval-jobqueue and everything they stand on, one room per stage of a job.

Read in the order a job travels:

    episode.py     the `evaluate-episode` flow: load, lease a slot, play, write metrics, release
    campaign/      the `campaign` flow: which job next, just in time; settle what runs end as
    slots/         a slot on a policy server: leases, wake-ups, slot events, pools, quarantine
    results/       metrics files, videos, the leaderboard
    reports/       reading a campaign afterwards: runs, report, status, list, purge

underneath them:

    runtime/       talking to Prefect and running it: API probe, retries, the lease engine,
                   provisioning, the embedded and the user's server, the local stack, processes
    evaluators/    what plays an episode (`sim`, `command:`, `module:Class`)
    cloudlogging/  Google Cloud Logging
    demo/          demo policy servers and their busy log
    naming.py      every name evalq writes into Prefect, and its parser

and the front ends on top:

    cli/           `evalq`: one module per command group
    grader/        the grading service (HTTP API, its flow, its nodes)
    batch/         batches of pipelines: the campaign's loop over items that need no slot

Imports go down this list, never up (docs/architecture.md, "Layers"; tests/test_layers.py).
`deployments.py` and `grading.py` only keep entrypoints that stored deployments name.
"""
