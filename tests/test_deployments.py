"""prefect.yaml is the one definition of the deployments: `prefect deploy` and the embedded
server get the same ones, and the campaign runs as a deployment too."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import get_client

from flows.runtime.deployments import apply_deployments, load_specs
from kit import make_fleet, make_job, pool_params, write_inputs

REPO = Path(__file__).resolve().parent.parent


async def read(name: str):
    async with get_client() as client:
        return await client.read_deployment_by_name(name)


@pytest.fixture(scope="module")
def deployed_elsewhere(prefect_server, tmp_path_factory) -> Path:
    """The README's cluster recipe, `evalq workpools apply` then `prefect deploy --all`, run in
    a directory holding only a copy of prefect.yaml, which is deleted afterwards."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    pools = subprocess.run([sys.executable, "-m", "flows.cli", "workpools", "apply"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert pools.returncode == 0, pools.stderr
    directory = tmp_path_factory.mktemp("deploy-from-here")
    shutil.copy(REPO / "prefect.yaml", directory / "prefect.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    shutil.rmtree(directory)
    return directory


def test_prefect_deploy_all_reads_our_prefect_yaml(deployed_elsewhere):
    from prefect.utilities.importtools import import_object

    expected = {(import_object(spec["entrypoint"]).name, spec["name"], spec["work_pool"]["name"]) for spec in load_specs()}
    assert len(expected) == 7
    for flow, deployment, pool in expected:
        found = asyncio.run(read(f"{flow}/{deployment}"))
        assert found.work_pool_name == pool
    episode = asyncio.run(read("evaluate-episode/slurm"))
    assert episode.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert episode.job_variables["gpus"] == 1


def test_deployments_do_not_depend_on_the_directory_deploy_ran_in(deployed_elsewhere):
    for name in ("evaluate-episode/slurm", "evaluate-episode/runner", "campaign/local", "run-command/kubernetes",
                 "kubernetes-job/runner"):
        found = asyncio.run(read(name))
        assert found.pull_steps == [{"flows.runtime.deployments.use_installed_package": {}}], found.pull_steps
        assert found.path is None
        assert deployed_elsewhere.name not in json.dumps(found.model_dump(mode="json"))


def run_episode_as_a_cluster_job(tmp_path, team: str, deployment_id) -> None:
    """Create an episode run of the deployment `deployment_id(client)` names and run it with
    `python -m prefect.engine` (what a SLURM or Kubernetes job runs) in yet another directory:
    the pull step runs, nothing is looked for where `prefect deploy` ran, the episode completes."""
    fleet, resources = make_fleet({f"{team}_1": [1]})
    job = make_job(tmp_path, team, "pick", 1, [f"{team}_1"])
    elsewhere = tmp_path / "job-cwd"
    elsewhere.mkdir()

    async def create():
        from flows.slots.pools import apply_pools

        async with get_client() as client:
            await apply_pools(client, resources)
            return await client.create_flow_run_from_deployment(await deployment_id(client), parameters=dict(
                job=job.model_dump(mode="json"), resources=pool_params(job, resources),
                results_dir=str(tmp_path / "results"), evaluator_options={"load_seconds": 0, "steps": 2, "step_seconds": 0},
                campaign=f"{team}-as-a-cluster-job",
            ))

    run = asyncio.run(create())
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": str(run.id)}
    with fleet:
        engine = subprocess.run([sys.executable, "-m", "prefect.engine"], cwd=elsewhere, env=env,
                                capture_output=True, text=True, timeout=180)

    async def final():
        async with get_client() as client:
            return await client.read_flow_run(run.id)

    run = asyncio.run(final())
    assert run.state.is_completed(), (run.state, engine.stdout[-2000:], engine.stderr[-2000:])
    assert "use_installed_package" in engine.stdout + engine.stderr
    assert job.metrics_path(tmp_path / "results").exists()


def test_a_run_of_it_executes_the_way_a_cluster_job_does(deployed_elsewhere, tmp_path):
    async def slurm_deployment(client):
        return (await client.read_deployment_by_name("evaluate-episode/slurm")).id

    run_episode_as_a_cluster_job(tmp_path, "gone", slurm_deployment)


def test_embedded_path_applies_the_same_definition(prefect_server):
    async def apply():
        async with get_client() as client:
            return await apply_deployments(client, "local")

    applied = asyncio.run(apply())
    assert set(applied) == {"evaluate-episode/local", "campaign/local"}
    episode = asyncio.run(read("evaluate-episode/local"))
    assert episode.entrypoint == "flows.episode:evaluate_episode"
    assert episode.pull_steps == [{"flows.runtime.deployments.use_installed_package": {}}]
    assert episode.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"


def run_campaign_deployment(tmp_path, team: str, deployment_id) -> None:
    """Run a campaign of two episodes through the deployment `deployment_id(client)` names, on
    the warm runner: the campaign run completes and both episodes wrote their metrics."""
    fleet, resources = make_fleet({f"{team}_1": [1]})
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for i in range(2)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)

    async def run_deployment():
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(await deployment_id(client), parameters=dict(
                jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                name=f"{team}-as-deployment", evaluator_options={"load_seconds": 0.1, "steps": 3, "step_seconds": 0.05},
            ))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                run = await client.read_flow_run(run.id)
                if run.state.is_final():
                    return run
                await asyncio.sleep(1)
            return run

    with fleet:
        run = asyncio.run(run_deployment())
    assert run.state.is_completed(), run.state
    assert all(job.metrics_path(tmp_path / "results").exists() for job in jobs)


def test_the_campaign_runs_as_a_deployment(episode_worker, tmp_path):
    async def local_campaign(client):
        return (await client.read_deployment_by_name("campaign/local")).id

    run_campaign_deployment(tmp_path, "dep", local_campaign)


def test_the_embedded_stack_replaces_an_older_pool_of_another_type(prefect_server):
    """Databases from before the prefork worker have `evalq-local` as a plain process pool."""
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.runtime.provisioning import ensure_local_pool
    from generate.errors import InputError
    from flows.runtime.work_pools import apply_work_pool
    from workpools.prefork import WORK_POOL_TYPE, base_job_template
    from workpools.runner import WORK_POOL_TYPE as RUNNER_TYPE

    async def scenario():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="old-local", type="process"))
            with pytest.raises(InputError, match="exists with type 'process'"):
                await apply_work_pool(client, "old-local", WORK_POOL_TYPE, base_job_template())
            await ensure_local_pool(client, "old-local")
            return (await client.read_work_pool("old-local")).type

    assert asyncio.run(scenario()) == RUNNER_TYPE  # the local stack runs a warm runner


# -- deployments stored before flows/ moved into sub-packages ------------------------------------
OLD_PULL_STEP = [{"flows.deployments.use_installed_package": {}}]
"""The pull step `prefect deploy` wrote into every deployment before flows/runtime/ existed."""


@pytest.mark.parametrize("entrypoint, flow_name", [
    ("flows.episode:evaluate_episode", "evaluate-episode"),
    ("flows.campaign:campaign", "campaign"),
    ("flows.grading.grade_solution", "grade-solution"),
])
def test_the_entrypoints_stored_before_the_move_still_load(entrypoint, flow_name):
    from prefect.flows import load_flow_from_entrypoint

    assert load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False).name == flow_name


def test_a_campaign_deployment_stored_before_the_move_still_runs(episode_worker, tmp_path):
    """A campaign deployment as `prefect deploy` stored it before the move (old entrypoint, old
    pull step), run by the warm runner."""
    async def old_deployment(client):
        flow_id = await client.create_flow_from_name("campaign")
        return await client.create_deployment(flow_id=flow_id, name="stored-before-the-move", entrypoint="flows.campaign:campaign",
                                              work_pool_name="evalq-local", pull_steps=OLD_PULL_STEP)

    run_campaign_deployment(tmp_path, "old", old_deployment)


def test_an_episode_deployment_with_the_old_pull_step_runs_the_way_a_cluster_job_does(prefect_server, tmp_path):
    """`python -m prefect.engine` runs the old pull step (`flows.deployments.use_installed_package`)."""
    async def old_deployment(client):
        flow_id = await client.create_flow_from_name("evaluate-episode")
        return await client.create_deployment(flow_id=flow_id, name="old-pull-step", entrypoint="flows.episode:evaluate_episode",
                                              work_pool_name="evalq-local", pull_steps=OLD_PULL_STEP)

    run_episode_as_a_cluster_job(tmp_path, "oldpull", old_deployment)


def test_workpools_apply_gives_a_runner_pool_its_episode_deployment(prefect_server):
    """No `prefect deploy` step in the warm-runner recipe: the pool comes with evaluate-episode on it."""
    from typer.testing import CliRunner

    from flows.cli.root import app

    result = CliRunner().invoke(app, ["workpools", "apply", "--kind", "runner", "--name", "runner-apply-test"])
    assert result.exit_code == 0, result.output
    assert "applied deployment evaluate-episode/runner-apply-test on runner-apply-test" in result.stdout
    deployment = asyncio.run(read("evaluate-episode/runner-apply-test"))
    assert deployment.work_pool_name == "runner-apply-test" and deployment.entrypoint == "flows.episode:evaluate_episode"
