"""The Kubernetes pool: its base job template, rendered offline by prefect-kubernetes' own job
configuration, validated strictly against the Kubernetes schema, and submitted by the real
worker to the `kmock` API emulator on loopback."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

pytest.importorskip("prefect_kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect_kubernetes.worker import KubernetesWorker  # noqa: E402

from workpools.kubernetes import WORK_POOL_TYPE, base_job_template  # noqa: E402
from workpools.kubernetes.evaluation import (  # noqa: E402
    GKE_ACCELERATOR_LABEL,
    Compute,
    KubernetesEvaluation,
    flow_run_tags,
    job_variables,
)
from workpools.kubernetes.configmap import MOUNT_PATH, config_map_name  # noqa: E402
from workpools.kubernetes.render import render_job_configuration, render_job_manifest  # noqa: E402
from workpools.kubernetes.worker import EvaluationKubernetesWorker  # noqa: E402

KUBERNETES_VERSIONS = ["1.30", "1.33"]

EVALUATION = KubernetesEvaluation(
    image="ghcr.io/challenge/sim-eval",
    image_tag="2026.11.3",
    namespace="challenge",
    service_account="evaluator",
    compute=Compute(gpus=2, accelerator="nvidia-l4", cpu="8", memory="32Gi", scratch="100Gi"),
    env={"EVAL_TRACK": "manipulation"},
    secrets=["team-tokens"],
    git_commit="3f2a9c1d5e7b8a9c0d1e2f3a4b5c6d7e8f9a0b1c",
    tags=["campaign:finals"],
)


def flow_run(**fields) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), name="brave-otter", flow_id=uuid.uuid4(), **fields)


def render(values: dict, run: FlowRun | None = None, template: dict | None = None) -> dict:
    return asyncio.run(render_job_manifest(template or base_job_template(), values, run or flow_run()))


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


class TestTemplate:
    def test_kind_and_type(self):
        assert WORK_POOL_TYPE == EvaluationKubernetesWorker.type == "evalq-kubernetes"
        assert issubclass(EvaluationKubernetesWorker, KubernetesWorker)
        assert EvaluationKubernetesWorker.get_default_base_job_template() == base_job_template()

    def test_keeps_every_prefect_kubernetes_variable(self):
        default = KubernetesWorker.get_default_base_job_template()
        ours = base_job_template()
        missing = set(default["variables"]["properties"]) - set(ours["variables"]["properties"])
        assert missing == {"finished_job_ttl"}  # renamed ttl_seconds_after_finished
        assert set(ours["job_configuration"]) - set(default["job_configuration"]) == {"config_files"}
        assert set(default["job_configuration"]) <= set(ours["job_configuration"])

    def test_adds_gpu_evaluation_variables(self):
        variables = base_job_template()["variables"]["properties"]
        for name in ("gpus", "node_selector", "tolerations", "scratch_size", "scratch_path",
                     "ttl_seconds_after_finished", "env_from", "cpu_request", "memory_limit"):
            assert "default" in variables[name], name

    def test_default_prefect_template_fails_strict_validation(self):
        manifest = render({"image": "x:1"}, template=KubernetesWorker.get_default_base_job_template())
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


class TestRenderedManifest:
    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_defaults_are_strictly_valid(self, version):
        kubernetes_validate.validate(render({"image": "sim:1"}), version, strict=True)

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_evaluation_config_is_strictly_valid(self, version):
        manifest = render(job_variables(EVALUATION), flow_run(tags=flow_run_tags(EVALUATION)))
        kubernetes_validate.validate(manifest, version, strict=True)

    def test_evaluation_config_lands_in_the_job(self):
        manifest = render(job_variables(EVALUATION))
        spec = manifest["spec"]
        pod = pod_spec(manifest)
        container = pod["containers"][0]
        assert manifest["metadata"]["namespace"] == "challenge"
        assert container["image"] == "ghcr.io/challenge/sim-eval:2026.11.3"
        assert container["resources"] == {
            "limits": {"memory": "32Gi", "nvidia.com/gpu": 2},
            "requests": {"cpu": "8", "memory": "32Gi"},
        }
        assert pod["nodeSelector"] == {GKE_ACCELERATOR_LABEL: "nvidia-l4"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["serviceAccountName"] == "evaluator"
        assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}}]
        assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
        assert container["envFrom"] == [{"secretRef": {"name": "team-tokens"}}]
        assert {"name": "EVAL_TRACK", "value": "manipulation"} in container["env"]
        assert (spec["ttlSecondsAfterFinished"], spec["backoffLimit"]) == (86400, 0)
        assert (spec["parallelism"], spec["completions"]) == (1, 1)
        assert "parallelism" not in pod and "completions" not in pod

    def test_provenance_labels_on_job_and_pod(self):
        manifest = render(job_variables(EVALUATION))
        for labels in (manifest["metadata"]["labels"], manifest["spec"]["template"]["metadata"]["labels"]):
            assert labels["evalq.io/config-commit"] == EVALUATION.git_commit
            assert labels["evalq.io/image-tag"] == "2026.11.3"

    def test_flow_run_job_variables_override_the_pool(self):
        manifest = render({**job_variables(EVALUATION), "gpus": 0, "backoff_limit": 2})
        assert pod_spec(manifest)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 0
        assert manifest["spec"]["backoffLimit"] == 2


class TestEvaluationMapping:
    def test_flow_run_tags_carry_provenance(self):
        assert flow_run_tags(EVALUATION) == [
            "image:ghcr.io/challenge/sim-eval", "image-tag:2026.11.3", "accelerator:nvidia-l4", "cpu:8",
            "memory:32Gi", "config-commit:3f2a9c1d5e7b", "campaign:finals",
        ]

    def test_digest_image_reference(self):
        evaluation = EVALUATION.model_copy(update={"image_tag": "sha256:" + "ab" * 32})
        assert job_variables(evaluation)["image"] == "ghcr.io/challenge/sim-eval@sha256:" + "ab" * 32

    def test_unset_fields_keep_pool_defaults(self):
        variables = job_variables(KubernetesEvaluation(image="sim", image_tag="1"))
        assert not {"namespace", "service_account_name", "cpu_limit", "env"} & set(variables)


@pytest.fixture
def no_prefect_api_logging():
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    with temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}):
        yield


def test_worker_creates_the_configmap_then_the_job_on_kmock(no_prefect_api_logging):
    """Our worker (prefect-kubernetes' plus the ConfigMap) POSTs the run's ConfigMap, then our
    rendered Job mounting it, hands the ConfigMap to the Job, and DELETEs the Job when killing the run."""
    kmock = pytest.importorskip("kmock")
    from kube_cluster import kubeconfig

    from workpools.kubernetes.render import NoPrefectApi
    from workpools.kubernetes.worker import EvaluationJobConfiguration

    names = itertools.count(1)

    class Emulator(kmock.KubernetesEmulator):
        """kmock plus the API server's `generateName` (kmock 0.8 leaves such objects nameless)."""

        async def _handle(self, request):
            if request.action == kmock.action.CREATE:
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{next(names):05d}"
            return await super()._handle(request)

    files = {"tasks.yaml": "tasks: [pick_cube]\n", "eval.json": '{"episodes": 3}'}

    async def scenario():
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            values = {**job_variables(EVALUATION), "config_files": files,
                      "cluster_config": {"config": kubeconfig(str(server.url)), "context_name": "kmock"}}
            configuration = await EvaluationJobConfiguration.from_template_and_values(
                base_job_template(), values, client=NoPrefectApi()
            )
            run = flow_run(tags=flow_run_tags(EVALUATION))
            configuration.prepare_for_flow_run(run)
            worker = EvaluationKubernetesWorker(work_pool_name="evalq-kubernetes")
            result = await worker.run(run, configuration)
            calls = [(request.method, str(request.url.path), request.data) for request in emulator]
            await worker.kill_infrastructure(result.identifier, configuration, grace_seconds=0)
            deleted = [str(request.url.path) for request in emulator if request.method == "DELETE"]
            return run, result, calls, deleted

    run, result, calls, deleted = asyncio.run(scenario())
    namespace, name = result.identifier.split(":")
    assert (namespace, name) == ("challenge", "brave-otter-00001")
    posts = [(path, data) for method, path, data in calls if method == "POST"]
    assert [path for path, _ in posts] == ["/api/v1/namespaces/challenge/configmaps", "/apis/batch/v1/namespaces/challenge/jobs"]
    config_map, job = posts[0][1], posts[1][1]
    assert config_map["metadata"]["name"] == config_map_name(run.id)
    assert config_map["data"] == files
    assert config_map["metadata"]["labels"]["evalq.io/config-commit"] == EVALUATION.git_commit
    pod = pod_spec(job)
    assert {"name": "configs", "configMap": {"name": config_map_name(run.id)}} in pod["volumes"]
    assert {"name": "configs", "mountPath": MOUNT_PATH, "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert job["metadata"]["labels"]["evalq.io/config-commit"] == EVALUATION.git_commit
    assert job["metadata"]["labels"]["evalq.io/image-tag"] == "2026.11.3"
    assert job["metadata"]["labels"]["prefect.io/flow-run-name"] == "brave-otter"
    for manifest in (config_map, job):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)
    patches = [data for method, path, data in calls if method == "PATCH" and path.endswith(f"/configmaps/{config_map_name(run.id)}")]
    assert [patch["metadata"]["ownerReferences"][0]["name"] for patch in patches] == [name]
    assert deleted == [f"/apis/batch/v1/namespaces/challenge/jobs/{name}"]


def test_worker_without_config_files_creates_only_the_job(no_prefect_api_logging):
    """No config files: no ConfigMap, no configs volume (the plain prefect-kubernetes path)."""
    configuration = asyncio.run(render_job_configuration(base_job_template(), job_variables(EVALUATION), flow_run()))
    assert configuration.config_map_manifest() is None
    assert [volume["name"] for volume in pod_spec(configuration.job_manifest)["volumes"]] == ["scratch"]


def test_apply_creates_then_updates_the_kubernetes_pool(prefect_server):
    """The README recipe's first step: `evalq workpools apply --kind kubernetes`."""
    from prefect.client.orchestration import get_client
    from typer.testing import CliRunner

    from flows.cli.root import app

    runner = CliRunner()
    first = runner.invoke(app, ["workpools", "apply", "--kind", "kubernetes", "--name", "k8s-test"])
    second = runner.invoke(app, ["workpools", "apply", "--kind", "kubernetes", "--name", "k8s-test"])
    assert first.exit_code == 0, first.output
    assert "created work pool k8s-test (evalq-kubernetes)" in first.output
    assert "applied deployment run-command/kubernetes on k8s-test" in first.output
    assert "updated work pool k8s-test (evalq-kubernetes)" in second.output

    async def read():
        async with get_client() as client:
            return await client.read_work_pool("k8s-test")

    pool = asyncio.run(read())
    assert pool.type == "evalq-kubernetes"
    assert pool.base_job_template == base_job_template()
