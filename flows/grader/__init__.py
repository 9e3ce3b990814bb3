"""The grading service: researchers submit a solution file over HTTP and get a score back.

Every submission is a `grade-solution` flow run (`flow.py`) on a node, a work queue
of the `evalq-grader` pool that one runner serves. The API keeps no state of its own: jobs
live in Prefect (parameters, tags, state, work queue) and in the results dir. Its Prefect
names (pool, deployment, tags, node queues) live in `flows/naming.py`.

    flow       the `grade-solution` flow: one solution graded on the node that took it
    models     pydantic contracts: the config YAML, the flow's job, every HTTP answer
    auth       TOKENS.yaml: user -> token or salted hash, constant-time checks
    command    the grading argv from its template; the job's opt-in timeout; when it is overdue
    execution  run the argv in its own process group; kill the group on timeout or cancel
    store      files in the results dir: uploads, work dirs, job records, results files
    placement  pure: the node with the shortest queue; queue positions
    node_ids   pure: a node's stable integer id (the `node_id` clients read) and its description
    jobs       Prefect I/O: create, read, list and cancel grading runs
    nodes      node registration and reads, the node runners (`start_node_runner`), the grader deployment
    app        the FastAPI app (`evalq grader serve`)
    cli        `evalq grader serve` and the `evalq grade ...` client

A front end: may import `flows/runtime/` and `flows/naming.py` (docs/architecture.md,
"Layers"); `flows/cli/` adds its commands.
"""
