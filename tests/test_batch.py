"""`evalq batch` as a user of the batch submitter runs it, against the session's real Prefect
server and warm runner: thresholds, report folder, resubmission, the same name again, purge."""

from __future__ import annotations

import json
import os

import pytest
from batch_kit import item_list, pauses, pipeline, runs_of, threshold_violations
from test_campaign_cli import evalq

ITEMS = [f"tile-{i:02d}" for i in range(30)]
BROKEN = ["tile-03", "tile-14", "tile-27"]


def api_env() -> dict:
    return {"PREFECT_API_URL": os.environ["PREFECT_API_URL"]}


@pytest.fixture(scope="module")
def failed_batch(episode_worker, tmp_path_factory):
    """A batch of 30 items whose command fails for 3 of them, at most 4 in flight, resuming at 1."""
    tmp = tmp_path_factory.mktemp("batch")
    command, broken = pipeline(tmp, BROKEN)
    items = item_list(tmp, ITEMS)
    run = evalq("batch", "run", "--name", "b30", "--items", str(items), "--command", command, "--results-dir",
                str(tmp / "results"), "--stop-threshold", "4", "--resume-threshold", "1", "--max-attempts", "1",
                "--stats-interval", "5", env=api_env(), cwd=tmp)
    return tmp, command, broken, run


def test_a_batch_runs_every_item_once_within_its_thresholds_and_lists_what_failed(failed_batch):
    tmp, _, _, run = failed_batch
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Batch b30" in run.stderr  # the summary table
    results = tmp / "results"
    assert (results / "failed_items.txt").read_text() == "".join(f"{item}\n" for item in BROKEN)
    for item in ITEMS:
        done = item not in BROKEN
        assert (results / item / "output.txt").exists() == done
        assert (results / item / "evalq-item.json").exists() == done
    record = json.loads((results / "tile-00" / "evalq-item.json").read_text())
    assert record["item"] == "tile-00" and record["batch"] == "b30" and record["state"] == "Completed"

    runs = runs_of("b30")
    assert sorted(r.name for r in runs) == sorted(f"b30:{item}" for item in ITEMS)  # one run per item
    assert all("evalq-batch" in r.tags and "pool:evalq-local" in r.tags for r in runs)
    assert threshold_violations(runs, most=4, resume_at=1) == []
    assert pauses(runs, most=4) >= 3  # dispatch did stop at 4, more than once


def test_the_report_folder_holds_the_failed_items_logs_and_an_item_list(failed_batch):
    tmp, _, _, _ = failed_batch
    folder = tmp / "report"
    result = evalq("batch", "report", "b30", "--report-dir", str(folder), "--json", env=api_env())
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["report"]["done"] == 27 and document["report"]["failed"] == 3
    assert document["durations"]["count"] == 27 and document["durations"]["longest"] >= 0.9
    assert (folder / "failed_items.txt").read_text() == "".join(f"{item}\n" for item in BROKEN)
    assert sorted(p.name for p in (folder / "failed").iterdir()) == [f"{item}.log" for item in BROKEN]
    log = (folder / "failed" / "tile-14.log").read_text()
    assert "state:   Failed" in log and "message: exited with code 3: stage 2 of tile-14: no benchmark tile" in log
    assert "processing tile-14" in log and "[stderr] stage 2 of tile-14: no benchmark tile" in log  # its run's log
    summary = (folder / "summary.md").read_text()
    assert "| 30 | 27 | 3 | 0 | 0 | 0 |" in summary
    assert "| 3 | Failed: exited with code 3: stage 2 of {item}: no benchmark tile | `tile-03`, `tile-14`, `tile-27` |" \
        in summary  # one reason: each item's own id read as {item}
    assert "[`tile-27`](failed/tile-27.log)" in summary


@pytest.mark.anyio
async def test_evaltui_shows_the_batch_like_a_campaign(failed_batch):
    from tui.source import Source

    async with Source("b30") as source:
        snapshot = await source.queue()
        await source.sync_index()
        rows = await source.rows(0)
        failed = await source.episodes("b30", "batch-item", types=["FAILED"])
        detail = await source.detail(failed.episodes[0].id)
    assert (snapshot.planned, snapshot.counts["completed"], snapshot.counts["failed"]) == (30, 27, 3)
    assert [(r.team, r.task, r.done, r.failed, r.total) for r in rows.rows] == [("b30", "batch-item", 27, 3, 30)]
    assert sorted(e.job_id for e in failed.episodes) == BROKEN
    assert any("[stderr] stage 2 of" in line.message for line in detail.logs)


def test_after_the_fix_a_batch_of_the_failed_items_completes_them(failed_batch):
    tmp, command, broken, _ = failed_batch
    broken.write_text("")  # the fix
    rerun = evalq("batch", "run", "--name", "b30-again", "--items", str(tmp / "results" / "failed_items.txt"), "--command",
                  command, "--results-dir", str(tmp / "results"), "--max-in-flight", "2", env=api_env(), cwd=tmp)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(r.name for r in runs_of("b30-again")) == sorted(f"b30-again:{item}" for item in BROKEN)
    assert all((tmp / "results" / item / "output.txt").exists() for item in ITEMS)
    assert (tmp / "results" / "failed_items.txt").read_text() == ""
    # the first batch, run again under its name, finds every item done: nothing to run, no server needed
    again = evalq("batch", "run", "--name", "b30", "--items", str(tmp / "items.txt"), "--command", command,
                  "--results-dir", str(tmp / "results"), env=api_env(), cwd=tmp)
    assert again.returncode == 0 and "all 30 items are done" in again.stdout, again.stderr


def test_purge_removes_the_runs_not_the_results(failed_batch):
    tmp, _, _, _ = failed_batch
    dry = evalq("batch", "purge", "b30", "--dry-run", env=api_env())
    assert dry.returncode == 0 and "would delete 30 item runs (27 Completed, 3 Failed) and 1 batch flow runs" in dry.stdout
    assert len(runs_of("b30")) == 30
    purged = evalq("batch", "purge", "b30", env=api_env())
    assert purged.returncode == 0, purged.stderr
    assert "deleted 30 item runs" in purged.stdout and "0 runs kept" in purged.stdout
    assert runs_of("b30") == []
    assert all((tmp / "results" / item / "output.txt").exists() for item in ITEMS)
    assert (tmp / "results" / "failed_items.txt").exists()
