"""Kubernetes: organizers' evaluation images as Jobs, and a work pool for images that carry evalq.

An organizer's image runs as it is (`evalq k8s render|submit`, `cli.py`): the config
(`config.py`, the old GKE tool's sections in `sections.py`) becomes a Job and a ConfigMap in the
old tool's shape (`jobspec.py`, `prepare.py`), and a `kubernetes-job` flow run (`flow.py`,
its parameter in `submission.py`, created by `runs.py`) creates them through prefect-kubernetes'
job API and follows the Job from outside the pod; `logs.py` reads a Job's lines back from Cloud
Logging (`evalq k8s logs`); `provenance.py` records the config's commit.

For images that carry evalq (`prefect_in_pod: true`), the pool's type is `evalq-kubernetes`
(`worker.EvaluationKubernetesWorker`): prefect-kubernetes' worker that also creates the run's
config files as a ConfigMap before the Job.

`base-job-template.json` is prefect-kubernetes' default template plus the variables a GPU
evaluation needs (gpus, node_selector, tolerations, scratch_size/scratch_path, env_from,
ttl_seconds_after_finished) and with `parallelism`/`completions` moved from the PodSpec to
the Job spec, where the Kubernetes schema has them. It is plain JSON so that
`prefect work-pool create --base-job-template` can use the file as it is.

`runners.py` (`evalq k8s runners`): warm runners on GPU nodes as one Indexed Job instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.naming import KUBERNETES_POOL_TYPE as WORK_POOL_TYPE  # noqa: F401  (the pool type; `worker.py` declares it)

TEMPLATE_PATH = Path(__file__).with_name("base-job-template.json")


def base_job_template() -> dict:
    """A fresh copy of the pool's base job template (`job_configuration` + `variables`)."""
    return json.loads(TEMPLATE_PATH.read_text())
