"""The `command:` evaluator on its own: real child processes, no Prefect server."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys

import pytest

from flows.evaluators.command import CommandEvaluator


def open_files() -> set[str]:
    """What this process's descriptors point to (other threads of the test run open and close
    theirs meanwhile: a count would be flaky)."""
    found = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:  # closed meanwhile
            continue
    return found


def test_constructing_an_evaluator_leaks_no_file_descriptor():
    # Failed before the fix: `mkstemp(...)[1]` kept the descriptor open, one per episode.
    evaluators = [CommandEvaluator(f"{sys.executable} -c pass") for _ in range(20)]
    assert not open_files() & {str(evaluator.metrics_file) for evaluator in evaluators}
    for evaluator in evaluators:
        assert evaluator.metrics_file.exists()
        asyncio.run(evaluator.kill())
        assert not evaluator.metrics_file.exists()


def evaluator_program(source: str) -> CommandEvaluator:
    return CommandEvaluator(f"{sys.executable} -c {shlex.quote(source)}")


def test_a_failure_names_the_programs_last_stderr_line_bounded_and_masked(monkeypatch):
    from flows.evaluators import EvaluationError
    from generate.models import Job, Server

    monkeypatch.setenv("TEAM_API_TOKEN", "tok-3f9a77c1")
    job = Job(id="a/pick/1", payload=dict(team="A", team_slug="a", track="standard", task="pick", instance_id=1,
                                          instance_basename="b", instance_path="p"), resource_type="p_1", resource_types=["p_1"])
    before_ready = evaluator_program("import sys; print('loading', flush=True); sys.stderr.write('no GPU visible\\n\\n'); sys.exit(3)")
    with pytest.raises(EvaluationError) as failed:
        asyncio.run(before_ready.prepare(job))
    assert str(failed.value) == "evaluator exited with code 3 before READY: no GPU visible"

    program = ("import os, sys; print('READY', flush=True); sys.stdin.readline(); "
               "sys.stderr.write('x' * 500 + '\\n'); "
               "sys.stderr.write('auth failed with token=' + os.environ['TEAM_API_TOKEN'] + ' password: hunter22\\n'); sys.exit(4)")
    playing = evaluator_program(program)

    async def play():
        await playing.prepare(job)
        return await playing.run(job, Server(host="127.0.0.1", port=9))

    with pytest.raises(EvaluationError) as failed:
        asyncio.run(play())
    assert str(failed.value) == "evaluator exited with code 4: auth failed with token=*** password: ***"

    chatty = evaluator_program("import sys; print('READY', flush=True); sys.stdin.readline(); sys.stderr.write('y' * 500 + '\\n'); sys.exit(5)")

    async def play_chatty():
        await chatty.prepare(job)
        return await chatty.run(job, Server(host="127.0.0.1", port=9))

    with pytest.raises(EvaluationError) as failed:
        asyncio.run(play_chatty())
    reason = str(failed.value)
    assert reason.startswith("evaluator exited with code 5: yyy") and reason.endswith("…") and len(reason) < 250


def test_an_output_line_over_64_kib_is_logged_whole_or_in_pieces_and_the_episode_ends_with_its_metrics():
    """asyncio's default line limit is 64 KiB: a progress bar or a JSON blob without a newline
    failed the episode before (`Separator is not found, and chunk exceed the limit`)."""
    from flows.evaluators.lines import LINE_LIMIT
    from generate.models import Job, Server

    job = Job(id="a/pick/1", payload=dict(team="A", team_slug="a", track="standard", task="pick", instance_id=1,
                                          instance_basename="b", instance_path="p"), resource_type="p_1", resource_types=["p_1"])
    program = ("import sys; print('READY', flush=True); sys.stdin.readline(); "
               "sys.stdout.write('#' * 1500000 + '\\n'); sys.stderr.write('!' * 100000 + '\\n'); "
               "import json; print('METRICS ' + json.dumps(dict(success=1, log='z' * 600000)), flush=True)")  # over LINE_LIMIT too
    chatty = evaluator_program(program)
    logged: list[str] = []
    chatty._log = logged.append

    async def play():
        await chatty.prepare(job)
        return await asyncio.wait_for(chatty.run(job, Server(host="127.0.0.1", port=9)), 60)  # a bound against a hang

    metrics = asyncio.run(play())
    assert metrics["success"] == 1 and metrics["log"] == "z" * 600000  # a METRICS line is joined again, never logged
    hashes = [line for line in logged if set(line) == {"#"}]
    assert sum(map(len, hashes)) == 1500000 and max(map(len, hashes)) <= LINE_LIMIT  # in pieces a log line can carry
    assert [len(line) for line in logged if set(line) == {"!"}] == [100000] and "" not in logged
    assert not any("zzz" in line for line in logged)


def test_redact_masks_what_looks_like_a_credential():
    from flows.evaluators.redact import redact, secret_values

    secrets = secret_values({"PREFECT_API_KEY": "pnu_abcdef123", "HOME": "/home/someone", "AUTH_ON": "1"})
    assert secrets == ["pnu_abcdef123"]
    assert redact("key pnu_abcdef123 in /home/someone", secrets) == "key *** in /home/someone"
    assert redact("Authorization: Bearer eyJhbGciOi", []) == "Authorization: Bearer ***"
    assert redact("postgresql+asyncpg://prefect:s3cret@db:5432/prefect", []) == "postgresql+asyncpg://***@db:5432/prefect"
    assert redact("step 3 of 40: success=1", []) == "step 3 of 40: success=1"
