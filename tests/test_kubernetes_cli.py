"""`evalq k8s render` and `evalq k8s submit` with evalq's own config format: rendered offline and
validated strictly, submitted to a real Prefect server, refused from a dirty git tree (a real
repository). By default the image runs as it is (a `kubernetes-job` run follows its Job);
`prefect_in_pod: true` keeps the path where the pod runs the `run-command` flow. The old GKE
tool's format: tests/test_kubernetes_gke.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("prefect_kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from flows.cli.root import app  # noqa: E402
from workpools.kubernetes.configmap import MOUNT_PATH  # noqa: E402

CONFIG = """\
image: ghcr.io/challenge/sim-eval
image_tag: 2026.11.3
compute_config:
  accelerator: nvidia-l4
  gpus: 1
  cpu: 8
  memory: 32Gi
args: [python, -m, sim_eval, --config, /etc/configs/tasks.yaml]
namespace: challenge
env: {EVAL_TRACK: manipulation}
secrets: [team-tokens]
tags: [finals]
"""
CONFIG_IN_POD = CONFIG + "prefect_in_pod: true\n"
TASKS = "tasks: [pick_cube, open_drawer]\n"


@pytest.fixture
def config_dir(tmp_path) -> Path:
    folder = tmp_path / "challenge"
    folder.mkdir()
    (folder / "eval.yaml").write_text(CONFIG)
    (folder / "in-pod.yaml").write_text(CONFIG_IN_POD)
    (folder / "tasks.yaml").write_text(TASKS)
    return folder


def evalq(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


class TestRender:
    @pytest.mark.parametrize("version", ["1.30", "1.33"])
    def test_the_image_runs_as_it_is_in_a_strictly_valid_job(self, config_dir, version):
        result = evalq("k8s", "render", str(config_dir / "eval.yaml"), str(config_dir / "tasks.yaml"))
        assert result.exit_code == 0, result.output
        config_map, job = list(yaml.safe_load_all(result.output))
        for manifest in (config_map, job):
            kubernetes_validate.validate(manifest, version, strict=True)
        assert config_map["data"] == {"eval_config.yml": CONFIG, "tasks.yaml": TASKS}
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "ghcr.io/challenge/sim-eval:2026.11.3"
        assert "command" not in container  # the image's entrypoint, with the config's args
        assert container["args"] == ["python", "-m", "sim_eval", "--config", "/etc/configs/tasks.yaml"]
        assert {"name": "configs-volume", "mountPath": MOUNT_PATH, "readOnly": True} in container["volumeMounts"]
        assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
        assert container["resources"] == {"limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
                                          "requests": {"cpu": "8", "memory": "32Gi"}}
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert {"name": "EVAL_TRACK", "value": "manipulation"} in container["env"]
        assert container["envFrom"] == [{"secretRef": {"name": "team-tokens"}}]
        assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "challenge"
        assert "prefect" not in json.dumps(job).lower()  # nothing of Prefect in the pod

    @pytest.mark.parametrize("version", ["1.30", "1.33"])
    def test_prefect_in_pod_keeps_the_run_command_job(self, config_dir, version):
        result = evalq("k8s", "render", str(config_dir / "in-pod.yaml"), str(config_dir / "tasks.yaml"))
        assert result.exit_code == 0, result.output
        config_map, job = list(yaml.safe_load_all(result.output))
        for manifest in (config_map, job):
            kubernetes_validate.validate(manifest, version, strict=True)
        assert config_map["kind"] == "ConfigMap" and config_map["data"] == {"tasks.yaml": TASKS}
        pod = job["spec"]["template"]["spec"]
        assert {"name": "configs", "configMap": {"name": config_map["metadata"]["name"]}} in pod["volumes"]
        container = pod["containers"][0]
        assert {"name": "configs", "mountPath": MOUNT_PATH, "readOnly": True} in container["volumeMounts"]
        assert container["image"] == "ghcr.io/challenge/sim-eval:2026.11.3"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["args"][:3] == ["prefect", "flow-run", "execute"]  # the pod runs Prefect's engine
        assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "challenge"

    def test_prefect_in_pod_without_files_only_the_job(self, config_dir, tmp_path):
        output = tmp_path / "out" / "job.yaml"
        result = evalq("k8s", "render", str(config_dir / "in-pod.yaml"), "--output", str(output))
        assert result.exit_code == 0, result.output
        assert "1 manifests (Job)" in result.output
        assert [doc["kind"] for doc in yaml.safe_load_all(output.read_text())] == ["Job"]

    def test_unknown_kubernetes_version_names_the_config_and_keeps_the_earlier_output(self, config_dir, tmp_path):
        output = tmp_path / "job.yaml"
        output.write_text("kept\n")
        result = evalq("k8s", "render", str(config_dir / "eval.yaml"), "--output", str(output), "--kubernetes-version", "0.9")
        line = one_error_line(result)
        assert line.startswith(f"error: {config_dir / 'eval.yaml'}: Kubernetes 0.9: ")
        assert output.read_text() == "kept\n"

    def test_schema_violation_is_reported_with_its_place(self, config_dir):
        from workpools.kubernetes.render import render_manifests, validate_manifests

        [job] = render_manifests({"image": "sim:1"}, "evaluation", [])
        assert validate_manifests([job]) is None
        job["spec"]["template"]["spec"]["completions"] = 1  # where Prefect's default template puts it
        problem = validate_manifests([job])
        assert problem.startswith("Job is not valid for Kubernetes 1.30: spec.template.spec: ")
        assert "completions" in problem

    @pytest.mark.parametrize("edit, problem", [
        (lambda text: text.replace("image_tag: 2026.11.3\n", ""), "image_tag: Field required"),
        (lambda text: text.replace("gpus: 1", "gpus: many"), "compute_config.gpus: Input should be a valid integer"),
        (lambda text: text + "imagetag: typo\n", "imagetag: Extra inputs are not permitted"),
        (lambda text: text.replace("args: [python, -m, sim_eval, --config, /etc/configs/tasks.yaml]", "args: []"), "args: List should have at least 1 item"),
        (lambda text: text + "  - broken: [\n", "not valid YAML"),
        (lambda text: "- just\n- a list\n", "expected a mapping"),
    ])
    def test_config_errors_name_file_and_field(self, config_dir, edit, problem):
        path = config_dir / "eval.yaml"
        path.write_text(edit(CONFIG))
        line = one_error_line(evalq("k8s", "render", str(path)))
        assert line.startswith(f"error: {path}: ") and problem in line, line

    def test_config_file_problems(self, config_dir, tmp_path):
        other = tmp_path / "tasks.yaml"
        other.write_text("x: 1\n")
        line = one_error_line(evalq("k8s", "render", str(config_dir / "eval.yaml"), str(config_dir / "tasks.yaml"), str(other)))
        assert "two config files named 'tasks.yaml'" in line
        binary = tmp_path / "weights.bin"
        binary.write_bytes(b"\xff\xfe\x00")
        assert "not UTF-8 text" in one_error_line(evalq("k8s", "render", str(config_dir / "eval.yaml"), str(binary)))
        assert "file not found" in one_error_line(evalq("k8s", "render", str(tmp_path / "missing.yaml")))


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def committed(config_dir) -> tuple[Path, str]:
    git(config_dir, "init", "-q")
    git(config_dir, "add", ".")
    git(config_dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "config")
    return config_dir, git(config_dir, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def kubernetes_pool(prefect_server):
    """The evalq-kubernetes pool and its run-command/kubernetes deployment, as the README applies them."""
    result = evalq("workpools", "apply", "--kind", "kubernetes", "--name", "k8s-submit")
    assert result.exit_code == 0, result.output
    return "k8s-submit"


@pytest.fixture(scope="module")
def job_deployment(prefect_server) -> str:
    """prefect.yaml's kubernetes-job deployment on a runner pool of its own (no runner: runs wait)."""
    from kit import apply_runner_pool

    asyncio.run(apply_runner_pool("k8s-submit-runner", "runner", as_name="k8s-submit"))
    return "kubernetes-job/k8s-submit"


def read_run(url: str):
    from prefect import get_client

    run_id = url.rstrip("/").rsplit("/", 1)[-1]

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return asyncio.run(read())


def submitted(result) -> tuple[str, object]:
    """The Job's name and the run `evalq k8s submit` printed (`JOB_NAME<TAB>URL`)."""
    assert result.exit_code == 0, result.output
    job_name, url = result.stdout.strip().split("\t")
    return job_name, read_run(url)


def container_env(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


class TestSubmit:
    def test_queues_a_kubernetes_job_run_with_its_manifests_and_provenance(self, job_deployment, committed):
        folder, sha = committed
        from prefect_kubernetes.credentials import KubernetesCredentials

        line = one_error_line(evalq("k8s", "submit", str(folder / "eval.yaml"), "--deployment", job_deployment,
                                    "--credentials", "cluster-a"))
        assert line == "error: --credentials cluster-a: no KubernetesCredentials block of that name on this Prefect server"
        KubernetesCredentials().save("cluster-a", overwrite=True)
        result = evalq("k8s", "submit", str(folder / "eval.yaml"), str(folder / "tasks.yaml"),
                       "--deployment", job_deployment, "--credentials", "cluster-a")
        job_name, run = submitted(result)
        assert run.name == job_name and job_name.startswith("eval-")
        assert set(run.tags) >= {
            "image:ghcr.io/challenge/sim-eval", "image-tag:2026.11.3", "accelerator:nvidia-l4", "cpu:8",
            "memory:32Gi", f"config-commit:{sha[:12]}", "finals",
        }
        assert "config-dirty" not in run.tags
        request = run.parameters["request"]
        assert request["credentials"] == "cluster-a"
        assert request["config_map"]["data"] == {"eval_config.yml": CONFIG, "tasks.yaml": TASKS}
        env = container_env(request["job"])
        assert (env["CONFIG_VERSION"], env["JOB_NAME"], env["CONFIG_PATH_GIT_REPO"]) == (sha, job_name, "eval.yaml")
        assert request["job"]["metadata"]["labels"]["evalq.io/config-commit"] == sha
        assert run.deployment_id is not None and run.work_pool_name == "k8s-submit-runner"
        assert "warning: no runner or worker polls work pool k8s-submit-runner" in result.stderr


    def test_without_its_deployment_says_how_to_create_it(self, prefect_server, committed):
        folder, _ = committed
        line = one_error_line(evalq("k8s", "submit", str(folder / "eval.yaml"), "--deployment", "kubernetes-job/nowhere"))
        assert "no deployment kubernetes-job/nowhere" in line and "prefect deploy --name runner" in line
        line = one_error_line(evalq("k8s", "submit", str(folder / "eval.yaml"), "--deployment", "run-command/kubernetes"))
        assert "needs a kubernetes-job deployment" in line

    def test_prefect_in_pod_creates_a_run_command_run_with_job_variables(self, kubernetes_pool, committed):
        folder, sha = committed
        result = evalq("k8s", "submit", str(folder / "in-pod.yaml"), str(folder / "tasks.yaml"))
        assert result.exit_code == 0, result.output
        url = result.output.strip()
        assert "/runs/flow-run/" in url
        run = read_run(url)
        assert set(run.tags) >= {
            "image:ghcr.io/challenge/sim-eval", "image-tag:2026.11.3", "accelerator:nvidia-l4", "cpu:8",
            "memory:32Gi", f"config-commit:{sha[:12]}", "finals",
        }
        variables = run.job_variables
        assert variables["image"] == "ghcr.io/challenge/sim-eval:2026.11.3"
        assert variables["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert (variables["gpus"], variables["cpu_request"], variables["memory_limit"]) == (1, "8", "32Gi")
        assert variables["config_files"] == {"tasks.yaml": TASKS}
        assert variables["labels"]["evalq.io/config-commit"] == sha
        assert variables["env_from"] == [{"secretRef": {"name": "team-tokens"}}]
        assert run.parameters["job"]["argv"] == ["python", "-m", "sim_eval", "--config", "/etc/configs/tasks.yaml"]
        assert run.work_pool_name == kubernetes_pool

    def test_dirty_tree_is_refused_unless_allowed(self, job_deployment, committed):
        folder, sha = committed
        (folder / "tasks.yaml").write_text("tasks: [changed]\n")
        line = one_error_line(evalq("k8s", "submit", str(folder / "eval.yaml"), str(folder / "tasks.yaml"),
                                    "--deployment", job_deployment))
        assert "uncommitted changes (1, e.g. tasks.yaml)" in line and "--allow-dirty" in line
        _, run = submitted(evalq("k8s", "submit", str(folder / "eval.yaml"), str(folder / "tasks.yaml"),
                                 "--deployment", job_deployment, "--allow-dirty"))
        assert {"config-dirty", f"config-commit:{sha[:12]}"} <= set(run.tags)
        assert run.parameters["request"]["config_map"]["data"]["tasks.yaml"] == "tasks: [changed]\n"

    def test_outside_git_needs_a_config_version(self, job_deployment, config_dir):
        path = str(config_dir / "eval.yaml")
        assert "--config-version" in one_error_line(evalq("k8s", "submit", path, "--deployment", job_deployment))
        _, run = submitted(evalq("k8s", "submit", path, "--config-version", "0123456789abcdef0123", "--deployment", job_deployment))
        assert "config-commit:0123456789ab" in run.tags
        assert container_env(run.parameters["request"]["job"])["CONFIG_VERSION"] == "0123456789abcdef0123"

    def test_prefect_in_pod_deployment_must_be_on_an_evalq_kubernetes_pool(self, kubernetes_pool, committed):
        folder, _ = committed
        line = one_error_line(evalq("k8s", "submit", str(folder / "in-pod.yaml"), "--deployment", "run-command/nowhere"))
        assert "no deployment run-command/nowhere" in line
