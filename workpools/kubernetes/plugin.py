"""Prefect's collection entry point: registers the `evalq-kubernetes` worker type when
prefect-kubernetes is installed (`pip install 'eval-jobqueue[kubernetes]'`), and is silent otherwise."""

try:
    from workpools.kubernetes.worker import EvaluationKubernetesWorker  # noqa: F401 - registers the type
except ModuleNotFoundError as exc:  # pragma: no cover - without the extra
    if not (exc.name or "").startswith(("prefect_kubernetes", "kubernetes_asyncio")):
        raise
