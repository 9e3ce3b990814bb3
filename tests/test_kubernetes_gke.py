"""The old GKE tool's users, as they are: its documented example config and run specs
(`data_kubernetes/`, copied verbatim from that tool's documentation) rendered to strictly valid
manifests holding everything its image expects, its command habits (`render CONFIG RUN_SPECS
OUTPUT`, `submit --job-spec PATH --config-version SHA`, `logs JOB_NAME --since 3d --output
FILE`), and one-line errors for bad input. Real git repositories, a real Prefect server, the
real Cloud Logging client against the tests' loopback endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("prefect_kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from flows.cli.root import app  # noqa: E402

DATA = Path(__file__).resolve().parent / "data_kubernetes"
CONFIG_NAME, RUN_SPECS_NAME = "example.mlflow.job_config.yml", "pythia_run_specs.conf"
CONFIG_TEXT = (DATA / CONFIG_NAME).read_text()
RUN_SPECS_TEXT = (DATA / RUN_SPECS_NAME).read_text()
RUN_ID = "3969f731d3f74fd19cfed62a9aa26d69"


def evalq(*args: str):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(folder: Path, message: str = "configs") -> str:
    git(folder, "add", ".")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return git(folder, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> dict:
    """The old tool's layout: the configs under jobs/evaluation/ of a git repository, committed."""
    folder = tmp_path / "cajajejo"
    configs = folder / "jobs" / "evaluation"
    configs.mkdir(parents=True)
    shutil.copy(DATA / CONFIG_NAME, configs / CONFIG_NAME)
    shutil.copy(DATA / RUN_SPECS_NAME, configs / RUN_SPECS_NAME)
    git(folder, "init", "-q")
    return {"folder": folder, "config": configs / CONFIG_NAME, "run_specs": configs / RUN_SPECS_NAME, "sha": commit(folder)}


def rendered(*args) -> tuple[dict, dict]:
    result = evalq("k8s", "render", *args)
    assert result.exit_code == 0, result.output
    config_map, job = yaml.safe_load_all(result.output)
    return config_map, job


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


class TestTheDocumentedExample:
    @pytest.mark.parametrize("version", ["1.30", "1.33"])
    def test_renders_strictly_valid_manifests_with_all_the_image_expects(self, repo, version):
        config_map, job = rendered(repo["config"], repo["run_specs"], "--job-name", "eval-merciful-crocodile")
        for manifest in (config_map, job):
            kubernetes_validate.validate(manifest, version, strict=True)
        # the config travels untouched, the run specs keep their name and are run_specs.conf too
        assert config_map["data"] == {"eval_config.yml": CONFIG_TEXT, RUN_SPECS_NAME: RUN_SPECS_TEXT}
        volumes = {volume["name"]: volume for volume in pod(job)["volumes"]}
        configs = volumes["configs-volume"]["configMap"]
        assert configs["name"] == config_map["metadata"]["name"] == "eval-merciful-crocodile-configs"
        assert {(item["key"], item["path"]) for item in configs["items"]} == {
            ("eval_config.yml", "eval_config.yml"), (RUN_SPECS_NAME, RUN_SPECS_NAME), (RUN_SPECS_NAME, "run_specs.conf")}
        # /scratch: an ephemeral claim on the old tool's storage class
        claim = volumes["scratch-volume"]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == ("ssd", "50Gi")
        # the evaluation: the image's own entrypoint with the old tool's args and environment
        [init], [container] = pod(job)["initContainers"], pod(job)["containers"]
        assert container["image"].endswith("/evaluation:latest") and "command" not in container
        assert container["args"] == ["--trace", "evaluate"]
        assert {(m["name"], m["mountPath"]) for m in container["volumeMounts"]} == {
            ("configs-volume", "/etc/configs"), ("scratch-volume", "/scratch")}
        assert env_of(container) == {
            "CONFIG_PATH_GIT_REPO": f"jobs/evaluation/{CONFIG_NAME}",
            "HELM_CONFIG_PATH_GIT_REPO": f"jobs/evaluation/{RUN_SPECS_NAME}",
            "JOB_NAME": "eval-merciful-crocodile", "CONFIG_VERSION": repo["sha"],
            "MLFLOW_TRACKING_URI": "http://10.164.0.15:5000",
        }
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
        # the model, downloaded before the evaluation starts
        assert init["image"].endswith("/mlflow-skinny-gcp:da958c6a7e")
        assert init["command"] + init["args"] == ["mlflow", "artifacts", "download", "-r", RUN_ID, "-a", "model", "-d", "/scratch"]
        assert env_of(init) == {"MLFLOW_TRACKING_URI": "http://10.164.0.15:5000"}
        assert init["volumeMounts"] == [{"name": "scratch-volume", "mountPath": "/scratch"}]
        # the old tool's Job settings
        assert pod(job)["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
        assert (pod(job)["serviceAccountName"], pod(job)["restartPolicy"]) == ("kubernetes", "Never")
        assert (job["spec"]["ttlSecondsAfterFinished"], job["spec"]["backoffLimit"]) == (1800, 3)
        assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "default"
        assert job["metadata"]["labels"]["evalq.io/config-commit"] == repo["sha"]

    def test_options_replace_the_old_defaults(self, repo):
        _, job = rendered(repo["config"], repo["run_specs"], "--namespace", "evals", "--service-account", "eval-sa",
                          "--ttl", "600", "--backoff-limit", "0", "--scratch-size", "120Gi", "--scratch-class", "premium-rwo",
                          "--mlflow-image", "ghcr.io/org/mlflow:2.9", "--config-version", "abc1234")
        assert job["metadata"]["namespace"] == "evals" and pod(job)["serviceAccountName"] == "eval-sa"
        assert (job["spec"]["ttlSecondsAfterFinished"], job["spec"]["backoffLimit"]) == (600, 0)
        claim = {v["name"]: v for v in pod(job)["volumes"]}["scratch-volume"]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == ("premium-rwo", "120Gi")
        assert pod(job)["initContainers"][0]["image"] == "ghcr.io/org/mlflow:2.9"
        assert env_of(pod(job)["containers"][0])["CONFIG_VERSION"] == "abc1234"

    def test_scratch_as_an_empty_dir(self, repo):
        _, job = rendered(repo["config"], repo["run_specs"], "--scratch-empty-dir")
        assert {v["name"]: v for v in pod(job)["volumes"]}["scratch-volume"] == {"name": "scratch-volume", "emptyDir": {"sizeLimit": "50Gi"}}

    def test_a_gcs_model_is_copied_by_the_init_container(self, repo):
        text = CONFIG_TEXT.replace("  gs_uri: null\n", "  gs_uri: gs://models/pythia-70m\n").replace(
            "  mlflow_artifact:\n", "  mlflow_artifact: null\n  unused:\n")
        text = re.sub(r"  unused:\n(    .*\n)+", "", text)
        repo["config"].write_text(text)
        config_map, job = rendered(repo["config"], repo["run_specs"], "--config-version", "abc1234")
        [init] = pod(job)["initContainers"]
        assert init["command"] + init["args"] == ["gcloud", "storage", "cp", "--recursive", "gs://models/pythia-70m", "/scratch"]
        assert init["image"] == "gcr.io/google.com/cloudsdktool/google-cloud-cli:slim"
        assert config_map["data"]["eval_config.yml"] == text
        kubernetes_validate.validate(job, "1.33", strict=True)

    def test_job_names_are_readable_and_fresh(self, repo):
        names = {rendered(repo["config"], repo["run_specs"])[1]["metadata"]["name"] for _ in range(3)}
        assert len(names) == 3
        assert all(re.fullmatch(r"eval-[a-z]+(-[a-z]+)+", name) and len(name) <= 63 for name in names), names

    def test_the_old_command_line_writes_the_third_argument(self, repo, tmp_path):
        output = tmp_path / "jasper_eval_job.yml"
        result = evalq("k8s", "render", repo["config"], repo["run_specs"], output)
        assert result.exit_code == 0, result.output
        assert f"-> {output}" in result.output
        config_map, job = [doc for doc in yaml.safe_load_all(output.read_text())]
        assert (config_map["kind"], job["kind"]) == ("ConfigMap", "Job")
        assert RUN_SPECS_NAME in config_map["data"]
        line = one_error_line(evalq("k8s", "render", repo["config"], repo["run_specs"], output))
        assert line == f"error: {output}: holds rendered manifests: to write them there again pass --output {output}"
        assert evalq("k8s", "render", repo["config"], repo["run_specs"], "--output", output).exit_code == 0


@pytest.mark.parametrize("edit, problem", [
    (lambda text: text.replace("  suite: v1\n", "  suite: v1\n  sweet: 1\n"), "helm.sweet: Extra inputs are not permitted"),
    (lambda text: text + "mlflow:\n  uri: x\n", "mlflow: Extra inputs are not permitted"),
    (lambda text: text.replace("  gs_uri: null\n", "  gs_uri: gs://models/pythia\n"),
     "model_config: mlflow_artifact and gs_uri are mutually exclusive"),
    (lambda text: text.replace("  gs_uri: null\n", "  gs_uri: /models/pythia\n").replace("  mlflow_artifact:\n", "  mlflow_artifact: null\n  x:\n"),
     "model_config"),
    (lambda text: re.sub(r"mlflow_config:\n  tracking_uri: .*\n", "", text),
     "model_config.mlflow_artifact: needs mlflow_config.tracking_uri"),
    (lambda text: text.replace("  experiment_name: eval-test-debug\n", ""), "tracking_config.experiment_name: Field required"),
    (lambda text: text.replace("  run_name: null\n", "  run_name: [\n"), "not valid YAML (line"),
    (lambda text: text + "env: {JOB_NAME: mine}\n", "env.JOB_NAME: evalq sets it in the pod"),
])
def test_bad_configs_are_one_line_naming_file_and_field(repo, edit, problem):
    repo["config"].write_text(edit(CONFIG_TEXT))
    for command in ("render", "submit"):
        line = one_error_line(evalq("k8s", command, repo["config"], repo["run_specs"], "--allow-dirty"
                                    if command == "submit" else "--config-version=x"))
        assert line.startswith(f"error: {repo['config']}: ") and problem in line, line


def test_helm_needs_its_run_specs_and_names_stay_apart(repo, tmp_path):
    line = one_error_line(evalq("k8s", "render", repo["config"]))
    assert line == f"error: {repo['config']}: helm: HELM needs its run specs: pass the run specs file after the config"
    other = tmp_path / "run_specs.conf"
    other.write_text("entries: []\n")
    line = one_error_line(evalq("k8s", "render", repo["config"], repo["run_specs"], other))
    assert line.startswith(f"error: {other}: {RUN_SPECS_NAME} is mounted as run_specs.conf too")
    line = one_error_line(evalq("k8s", "render", repo["config"], repo["run_specs"], "--job-name", "Eval_1"))
    assert line.startswith("error: --job-name: 'Eval_1' is not a Kubernetes name")


@pytest.fixture(scope="module")
def job_deployment(prefect_server) -> str:
    """prefect.yaml's kubernetes-job deployment on a runner pool of its own (no runner: runs wait)."""
    from kit import apply_runner_pool

    asyncio.run(apply_runner_pool("k8s-gke-runner", "runner", as_name="k8s-gke"))
    return "kubernetes-job/k8s-gke"


def read_run(url: str):
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(url.rstrip("/").rsplit("/", 1)[-1])

    return asyncio.run(read())


class TestJobSpec:
    def test_a_spec_kept_in_git_is_submitted_as_it_is_with_the_config_version(self, repo, job_deployment):
        spec = repo["folder"] / "jobs" / "evaluation" / "jasper_eval_job.yml"
        assert evalq("k8s", "render", repo["config"], repo["run_specs"], spec, "--job-name", "eval-kept-spec").exit_code == 0
        sha = commit(repo["folder"], "the rendered spec, for the record")
        config_map, job = yaml.safe_load_all(spec.read_text())
        result = evalq("k8s", "submit", "--job-spec", spec, "--config-version", sha, "--deployment", job_deployment)
        assert result.exit_code == 0, result.output
        job_name, url = result.stdout.strip().split("\t")
        run = read_run(url)
        assert job_name == run.name == "eval-kept-spec"
        request = run.parameters["request"]
        assert request["config_map"] == config_map
        assert env_of(request["job"]["spec"]["template"]["spec"]["containers"][0])["CONFIG_VERSION"] == sha
        assert request["job"]["metadata"]["labels"]["evalq.io/config-commit"] == sha
        assert {"experiment:eval-test-debug", "creator:Jasper", "lifecycle:experimental", "datasets:dolly,dataset2",
                f"model-run-id:{RUN_ID}", "accelerator:nvidia-tesla-t4", "image-tag:latest",
                f"config-commit:{sha[:12]}"} <= set(run.tags)

    def test_a_changed_spec_is_refused_unless_allowed(self, repo, job_deployment):
        spec = repo["folder"] / "job.yml"
        evalq("k8s", "render", repo["config"], repo["run_specs"], "--output", spec)
        line = one_error_line(evalq("k8s", "submit", "--job-spec", spec, "--config-version", repo["sha"],
                                    "--deployment", job_deployment))
        assert "uncommitted changes (1, e.g. job.yml)" in line and "--allow-dirty" in line

    def test_the_old_tools_own_spec_names_what_it_cannot_submit(self, tmp_path, job_deployment):
        spec = tmp_path / "old.yml"
        shutil.copy(DATA / "old_tool_job_spec.yml", spec)
        line = one_error_line(evalq("k8s", "submit", "--job-spec", spec, "--config-version", "abc", "--deployment", job_deployment))
        assert line.startswith(f"error: {spec}: document 3 is a StorageClass: a job spec holds one Job and its ConfigMap")

    def test_config_or_spec_and_a_spec_as_it_is(self, repo):
        line = one_error_line(evalq("k8s", "submit", repo["config"], "--job-spec", repo["config"]))
        assert "give CONFIG [FILES]... or --job-spec PATH" in line
        line = one_error_line(evalq("k8s", "submit", "--job-spec", repo["config"], "--namespace", "other"))
        assert line == "error: --namespace: --job-spec is submitted as it is; render it again to change the Job"


@pytest.fixture
def endpoint(monkeypatch):
    from logging_endpoint import LoggingEndpoint

    with LoggingEndpoint() as endpoint:
        monkeypatch.setenv("EVALQ_LOGGING_ENDPOINT", endpoint.url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "evalq-test")
        yield endpoint


def test_logs_reads_a_jobs_entries_back_from_cloud_logging(endpoint, tmp_path):
    """GKE's entries of the Job's container and the flow's own, oldest first; other jobs' are left out."""
    endpoint.write({"logName": "projects/evalq-test/logs/stdout", "entries": [
        {"textPayload": "from the container", "labels": {"k8s-pod/job-name": "eval-amusing-sloth"}},
        {"textPayload": "another job", "labels": {"k8s-pod/job-name": "eval-other-job"}}]})
    endpoint.write({"logName": "projects/evalq-test/logs/evalq", "entries": [
        {"textPayload": "from the flow", "labels": {"job_name": "eval-amusing-sloth"}}]})
    output = tmp_path / ".tmp" / "logs.json"
    result = evalq("k8s", "logs", "eval-amusing-sloth", "--since", "3d", "--output", output)
    assert result.exit_code == 0, result.output
    assert f"2 entries -> {output}" in result.output
    assert [entry["payload"] for entry in json.loads(output.read_text())] == ["from the container", "from the flow"]
    assert one_error_line(evalq("k8s", "logs", 'x" OR logName!="y')).startswith("error: JOB_NAME")
    assert "--since 'three days'" in one_error_line(evalq("k8s", "logs", "eval-amusing-sloth", "--since", "three days"))
