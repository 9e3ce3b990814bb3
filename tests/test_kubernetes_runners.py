"""`evalq k8s runners`: warm runners as an Indexed Job, rendered offline and validated strictly
(no Kubernetes API server can run here), once the pool is checked on the session's Prefect server."""

from __future__ import annotations

import os

import pytest
import yaml
from typer.testing import CliRunner

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from flows.cli.root import app  # noqa: E402

BASE = ["k8s", "runners", "--image", "ghcr.io/challenge/evalq:2026.11", "--pool", "gpu-runners",
        "--replicas", "3", "--slots", "4", "--idle-timeout", "120"]


POOL = "gpu-runners"


@pytest.fixture(scope="module", autouse=True)
def runner_pool(prefect_server):
    """The pool the runners take work from, of type evalq-runner, on the session's server."""
    import asyncio

    from kit import apply_runner_pool

    asyncio.run(apply_runner_pool(POOL, "runner", as_name="k8s-runners-test"))


def evalq(*args: str):
    """`evalq k8s runners ...` checking the pool on the session's server (`--api`)."""
    return CliRunner().invoke(app, [*args, "--api", os.environ["PREFECT_API_URL"]])


def rendered(tmp_path, *args: str) -> dict:
    output = tmp_path / "runners.yaml"
    result = evalq(*BASE, *args, "--output", str(output))
    assert result.exit_code == 0, result.output
    return yaml.safe_load(output.read_text())


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_the_manifest_is_strictly_valid(tmp_path, version):
    manifest = rendered(tmp_path, "--api-url-secret", "prefect-api:url", "--node-selector",
                        "cloud.google.com/gke-accelerator=nvidia-l4", "--toleration", "dedicated=gpu:NoExecute",
                        "--service-account", "evalq-runner", "--work-queue", "finals", "--kubernetes-version", version)
    kubernetes_validate.validate(manifest, version, strict=True)


def test_one_runner_pod_per_index_that_completes_when_idle(tmp_path):
    manifest = rendered(tmp_path, "--api-url-secret", "prefect-api", "--gpus", "2",
                        "--node-selector", "cloud.google.com/gke-accelerator=nvidia-l4")
    spec = manifest["spec"]
    assert (manifest["kind"], spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Job", "Indexed", 3, 3)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"  # exit 0 after the idle timeout completes the pod; a crash restarts it
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert container["command"] == ["evalq"]
    assert container["args"] == ["runner", "--pool", "gpu-runners", "--slots", "4", "--idle-timeout", "120",
                                 "--name", "$(POD_NAME)"]
    env = {item["name"]: item for item in container["env"]}
    assert env["PREFECT_API_URL"]["valueFrom"] == {"secretKeyRef": {"name": "prefect-api", "key": "PREFECT_API_URL"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_user_values_cannot_expand_kubernetes_variables(tmp_path):
    """Kubernetes expands `$(VAR)` in args and reads `$$` as a literal `$`."""
    from workpools.kubernetes.runners import RunnerJob, manifest

    pool = "it's $(HOME) \"pool\""
    rendered = manifest(RunnerJob(image="evalq:1", pool=pool, replicas=1, slots=1, idle_timeout=60,
                                  api_url="http://prefect:4200/api", work_queues=["$$(X)"]))
    args = rendered["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["runner", "--pool", "it's $$(HOME) \"pool\""]
    assert args[3:5] == ["--work-queue", "$$$$(X)"]
    assert rendered["metadata"]["annotations"] == {"evalq.io/work-pool": "it's $(HOME) \"pool\""}


def test_printed_without_output(tmp_path):
    result = evalq(*BASE, "--api-url", "http://prefect:4200/api")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "evalq-runners"


def test_without_an_api_url_the_pods_get_the_server_found_unless_it_is_loopback(tmp_path):
    refused = one_error_line(evalq(*BASE))
    assert refused.startswith(f"error: the runners would talk to {os.environ['PREFECT_API_URL']}, this machine's loopback")
    manifest = rendered(tmp_path, "--allow-loopback")
    env = {item["name"]: item for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT_API_URL"] == {"name": "PREFECT_API_URL", "value": os.environ["PREFECT_API_URL"]}


def test_an_unknown_pool_is_refused_with_the_pools_of_that_type(tmp_path):
    line = one_error_line(evalq(*[arg if arg != POOL else "gpu-runnres" for arg in BASE], "--api-url", "http://prefect:4200/api"))
    assert line.startswith("error: --pool gpu-runnres: no work pool of type evalq-runner by that name on ")
    assert "(pools of that type: " in line and POOL in line


@pytest.mark.parametrize(("args", "expected"), [
    (["--api-url", "http://127.0.0.1:4200/api"], "this machine's loopback, which other nodes cannot reach"),
    (["--api-url", "http://x", "--api-url-secret", "s"], "give the Prefect API URL either as a value or as a Secret"),
    (["--api-url", "http://x", "--name", "Evalq_Runners"], "error: --name: 'Evalq_Runners' is not a DNS label"),
    (["--api-url", "http://x", "--replicas", "0"], "error: --replicas: Input should be greater than or equal to 1"),
    (["--api-url", "http://x", "--node-selector", "gpu"], "error: --node-selector: expected KEY=VALUE, got 'gpu'"),
    (["--api-url", "http://x", "--node-selector", "a=b c"], "error: --node-selector: a=b c is not a node label"),
    (["--api-url", "http://x", "--toleration", "gpu:Sometimes"], "error: --toleration gpu:Sometimes: --effect: String should match pattern"),
    (["--api-url", "http://x", "--kubernetes-version", "0.9"], "error: Kubernetes 0.9: kubernetes-validate"),
])
def test_bad_values_are_one_line_naming_the_option(tmp_path, args, expected):
    old = tmp_path / "runners.yaml"
    old.write_text("earlier manifest\n")
    line = one_error_line(evalq(*BASE, *args, "--output", str(old)))
    assert expected in line, line
    assert old.read_text() == "earlier manifest\n"
