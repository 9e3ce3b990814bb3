"""The same batch in the other places it runs: on the real single-node SLURM cluster (a pool of
type `evalq-slurm`, each item one SLURM job, with the pool's job variables), and on a folder's
embedded database when no Prefect server is set up at all."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from batch_kit import item_list, runs_of, threshold_violations
from test_slurm_worker import cluster_problem, slurm_cluster, slurm_state

SLURM_PIPELINE = '''
import json, os, pathlib, sys
item, out, broken = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
print(f"processing {item} in SLURM job {os.environ.get('SLURM_JOB_ID')}")
if item in broken.read_text().split():
    print(f"stage 2 of {item}: no benchmark tile", file=sys.stderr)
    sys.exit(3)
keys = ("SLURM_JOB_ID", "SLURM_MEM_PER_NODE")
(out / "slurm.json").write_text(json.dumps({key: os.environ.get(key) for key in keys}))
'''
SLURM_ITEMS = [f"huc-{i}" for i in range(8)]
SLURM_BROKEN = ["huc-2", "huc-5"]
SLURM_POOL = "evalq-batch-slurm-test"


def slurm_pipeline(tmp) -> tuple[str, object]:
    script, broken = tmp / "slurm_pipeline.py", tmp / "broken.txt"
    script.write_text(SLURM_PIPELINE)
    broken.write_text("\n".join(SLURM_BROKEN) + "\n")
    return shlex.join([sys.executable, str(script), "{item}", "{item_dir}", str(broken)]), broken


def evalq_batch(tmp, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "batch", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=tmp, timeout=600)


@pytest.mark.slurm
@pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")
def test_a_batch_on_the_slurm_cluster_runs_each_item_as_a_job_with_its_job_variables(prefect_server, tmp_path):
    command, broken = slurm_pipeline(tmp_path)
    items = item_list(tmp_path, SLURM_ITEMS)
    run = ["run", "--name", "on-slurm", "--items", str(items), "--command", command, "--pool", SLURM_POOL,
           "--results-dir", str(tmp_path / "results"), "--job-variable", "memory=300M", "--stop-threshold", "3",
           "--resume-threshold", "0", "--max-attempts", "1", "--stats-interval", "5"]
    with slurm_cluster(prefect_server, tmp_path, SLURM_POOL, "batch-slurm-test") as cluster:
        first = evalq_batch(tmp_path, *run)
        assert first.returncode == 1, first.stderr[-3000:] + cluster.worker_log.read_text()[-3000:]
        runs = runs_of("on-slurm")
        assert sorted(r.name for r in runs) == sorted(f"on-slurm:{item}" for item in SLURM_ITEMS)
        assert threshold_violations(runs, most=3, resume_at=0) == []
        for r in runs:  # each item one SLURM job, with the memory it asked for
            item = r.name.split(":", 1)[1]
            if item in SLURM_BROKEN:
                assert r.state.is_failed(), (r.name, r.state)
                continue
            seen = json.loads((tmp_path / "results" / item / "slurm.json").read_text())
            assert seen == {"SLURM_JOB_ID": r.infrastructure_pid, "SLURM_MEM_PER_NODE": "300"}
            assert slurm_state(r.infrastructure_pid, "COMPLETED") == "COMPLETED"
        failed = tmp_path / "results" / "failed_items.txt"
        assert failed.read_text() == "".join(f"{item}\n" for item in SLURM_BROKEN)

        report = evalq_batch(tmp_path, "report", "on-slurm", "--report-dir", str(tmp_path / "report"))
        assert report.returncode == 0, report.stderr
        log = (tmp_path / "report" / "failed" / "huc-5.log").read_text()
        assert "processing huc-5 in SLURM job" in log and "[stderr] stage 2 of huc-5: no benchmark tile" in log

        broken.write_text("")  # the fix; the failed items again, from the report's list
        again = ["run", "--name", "on-slurm-2", "--items", str(tmp_path / "report" / "failed_items.txt"), "--command",
                 command, "--pool", SLURM_POOL, "--results-dir", str(tmp_path / "results"), "--max-in-flight", "2"]
        second = evalq_batch(tmp_path, *again)
        assert second.returncode == 0, second.stderr[-3000:] + cluster.worker_log.read_text()[-3000:]
    assert all((tmp_path / "results" / item / "slurm.json").exists() for item in SLURM_ITEMS)
    assert failed.read_text() == ""


def test_with_no_server_set_up_a_batch_runs_on_the_folders_embedded_database(tmp_path):
    """No PREFECT_API_URL, no `evalq server`: `batch run`, `report` and `purge` use the folder's own database."""
    from batch_kit import pipeline

    folder = tmp_path / "project"
    folder.mkdir()
    env = {**os.environ, "EVALQ_SERVER_HOME": str(tmp_path / "no-server"), "PREFECT_HOME": str(tmp_path / "prefect-client")}
    env.pop("PREFECT_API_URL", None)

    def evalq(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", "batch", *args], capture_output=True, text=True,
                              env=env, cwd=folder, timeout=600)

    command, _ = pipeline(folder, ["cell-1"])
    item_list(folder, ["cell-0", "cell-1", "cell-2"])
    ran = evalq("run", "--batch_name", "here", "--item_list", "items.txt", "--command", command, "--max-attempts", "1",
                "--wait_seconds", "0.2", "--stop_threshold", "2", "--resume_threshold", "0")  # the submitter's spellings
    assert ran.returncode == 1, ran.stderr[-3000:]
    assert "this folder's embedded database" in ran.stderr and "Traceback" not in ran.stderr
    assert (folder / "results" / "failed_items.txt").read_text() == "cell-1\n"
    assert (folder / "results" / "cell-0" / "output.txt").exists()

    report = evalq("report", "here")  # the default folder: reports/<name>
    assert report.returncode == 0, report.stderr
    assert "this folder's embedded database" in report.stderr
    assert (folder / "reports" / "here" / "failed_items.txt").read_text() == "cell-1\n"
    assert (folder / "reports" / "here" / "failed" / "cell-1.log").exists()

    purged = evalq("purge", "here")
    assert purged.returncode == 0 and "deleted 3 item runs" in purged.stdout, purged.stdout + purged.stderr
    assert (folder / "results" / "cell-0" / "output.txt").exists()
    nothing = evalq("report", "here")
    assert nothing.returncode == 2 and nothing.stderr.strip().splitlines()[-1].startswith("error: batch 'here': no item runs")
