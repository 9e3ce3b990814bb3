"""task-spooler habits of the local GPU queue (`../shared/seeds/task-spooler-gpu-queue.md`), in
their pure parts: `--seed S --seeds N`, leading `NAME=value` words, `--timeout` and its default,
`TS_VISIBLE_DEVICES`, the free-memory threshold, the idle clock of the queue's worker; and
`evalq submit` parsing a command as `tsp` does. The queue end to end from a machine with no
server: tests/test_no_setup.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.root import app
from generate.errors import InputError
from workpools.local.submit import check_gpus, plan_jobs

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"


class TestSeeds:
    def test_a_first_seed_and_a_count_as_the_old_submit_script(self):
        from workpools.local.seeds import seed_list

        assert seed_list(42, "4") == [42, 43, 44, 45]
        assert seed_list(None, "4") == [42, 43, 44, 45]  # the script's default first seed
        assert seed_list(7, None) == [7] and seed_list(None, None) == [None]

    def test_lists_and_ranges_stay_valid(self):
        from workpools.local.seeds import seed_list

        assert seed_list(None, "1,3") == [1, 3] and seed_list(None, "0-2") == [0, 1, 2]

    @pytest.mark.parametrize("seed, seeds, problem", [
        (None, "0", "at least 1"), (42, "1,3", "--seed 42 with --seeds 1,3"), (None, "3-1", "backwards"),
    ])
    def test_bad(self, seed, seeds, problem):
        from workpools.local.seeds import seed_list

        with pytest.raises(ValueError, match=problem):
            seed_list(seed, seeds)

    def test_each_job_gets_its_seed_in_argv_and_env(self):
        jobs = plan_jobs(["train.py", "system.seed={seed}"], seed=42, seeds="3", environ={})
        assert [(job.argv[1], job.env["SEED"], job.seed) for job in jobs] == [
            ("system.seed=42", "42", 42), ("system.seed=43", "43", 43), ("system.seed=44", "44", 44)]


class TestCommandWords:
    def test_leading_assignments_set_the_environment(self):
        from workpools.local.options import split_environment

        assert split_environment(["CUDA_VISIBLE_DEVICES=0", "A_1=x=y", "python", "B=2"]) == (
            {"CUDA_VISIBLE_DEVICES": "0", "A_1": "x=y"}, ["python", "B=2"])
        assert split_environment(["python", "x"]) == ({}, ["python", "x"])
        assert split_environment(["1A=0", "x"]) == ({}, ["1A=0", "x"])  # not a name: a program

    def test_a_job_carries_them_and_the_seed(self):
        (job,) = plan_jobs(["CUDA_VISIBLE_DEVICES=0", "python", "run.py"], seed=5, environ={})
        assert job.argv == ["python", "run.py"] and job.env == {"SEED": "5", "CUDA_VISIBLE_DEVICES": "0"}

    def test_only_assignments_is_no_command(self):
        with pytest.raises(InputError, match="no command given"):
            plan_jobs(["A=1"], environ={})


class TestTimeout:
    @pytest.mark.parametrize("text, seconds", [
        (None, 72 * 3600), ("100000", 100000), ("90m", 5400), ("4h", 14400), ("1.5d", 129600), ("0", None), ("0h", None),
    ])
    def test_default_units_and_none(self, text, seconds):
        from workpools.local.options import parse_timeout

        assert parse_timeout(text) == seconds

    @pytest.mark.parametrize("text", ["soon", "-5", "4 hours", ""])
    def test_bad(self, text):
        from workpools.local.options import parse_timeout

        with pytest.raises(ValueError, match="--timeout"):
            parse_timeout(text)

    def test_every_job_has_the_default_unless_told(self):
        assert plan_jobs(["x"], environ={})[0].timeout == 72 * 3600
        assert plan_jobs(["x"], timeout="0", environ={})[0].timeout is None


class TestVisibleDevices:
    def test_evalq_wins_over_task_spooler(self):
        from workpools.local.options import visible_devices

        assert visible_devices({"TS_VISIBLE_DEVICES": "1,0"}) == [0, 1]
        assert visible_devices({"TS_VISIBLE_DEVICES": "0,1", "EVALQ_VISIBLE_DEVICES": "1"}) == [1]
        assert visible_devices({"TS_VISIBLE_DEVICES": " "}) is None and visible_devices({}) is None
        with pytest.raises(ValueError, match="TS_VISIBLE_DEVICES='0;1'"):
            visible_devices({"TS_VISIBLE_DEVICES": "0;1"})

    def test_jobs_record_them_and_are_checked_against_them(self):
        (job,) = plan_jobs(["x"], gpus=1, environ={"TS_VISIBLE_DEVICES": "1"})
        assert job.visible_gpus == [1]
        with pytest.raises(InputError, match="asks for 2 GPUs; this machine has 2, visible to it 1"):
            check_gpus(plan_jobs(["x"], gpus=2, environ={"TS_VISIBLE_DEVICES": "1"}), [0, 1])
        with pytest.raises(InputError, match=r"-g/--gpu-indices 0: not among the visible GPUs 1 \(TS_VISIBLE_DEVICES\)"):
            plan_jobs(["x"], gpu_indices="0", environ={"TS_VISIBLE_DEVICES": "1"})


class TestThreshold:
    @pytest.mark.parametrize("text, value", [("0.8", 0.8), ("80", 0.8), ("1", 1.0), ("0", 0.0), ("100", 1.0)])
    def test_fraction_or_task_spoolers_percentage(self, text, value):
        from workpools.local.options import parse_threshold

        assert parse_threshold(text) == pytest.approx(value)

    @pytest.mark.parametrize("text", ["-1", "101", "most"])
    def test_bad(self, text):
        from workpools.local.options import parse_threshold

        with pytest.raises(ValueError, match="GPU free threshold"):
            parse_threshold(text)

    def test_jobs_without_one_take_the_hosts_when_they_look_for_gpus(self):
        from workpools.local.flow import waiting_job

        (job,) = plan_jobs(["x"], gpus=1, environ={})
        assert job.gpu_free_threshold is None and waiting_job("k", job, 0.8).free_threshold == 0.8
        (own,) = plan_jobs(["x"], gpus=1, gpu_free_threshold=0.5, environ={})
        assert waiting_job("k", own, 0.8).free_threshold == 0.5


class TestIdleClock:
    def test_idle_only_after_the_timeout_without_work_and_not_while_the_api_is_away(self):
        from workpools.local.keeper import IdleClock

        now = [0.0]
        clock = IdleClock(10, now=lambda: now[0])
        clock.saw(True)
        now[0] = 100
        assert not clock.expired
        clock.saw(False)
        now[0] = 105
        clock.saw(None)  # the API did not answer: no change
        assert not clock.expired
        now[0] = 110
        assert clock.expired
        clock.saw(True)
        assert not clock.expired
        clock.saw(None)
        now[0] = 1000
        assert not clock.expired  # an API away since work was last seen: the worker stays
        assert not IdleClock(None).expired


class TestCommandLine:
    """`evalq submit` reads a command as `tsp` does: options end at its first word."""

    @pytest.fixture(autouse=True)
    def fake_gpus(self, monkeypatch):
        monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("FAKE_NVIDIA_SMI_CSV", raising=False)
        for name in ("TS_VISIBLE_DEVICES", "EVALQ_VISIBLE_DEVICES"):
            monkeypatch.delenv(name, raising=False)

    def dry_run(self, *words: str):
        result = CliRunner().invoke(app, ["submit", "--dry-run", *words])
        return result

    def test_the_seed_documents_chain_line_without_double_dash(self):
        result = self.dry_run("-g", "0", "-L", "label_s42", "--seed", "42", "--seeds", "3", "CUDA_VISIBLE_DEVICES=0",
                              "python", "scripts/run_tts_eval.py", "--config-path=../config", "system.seed={seed}")
        assert result.exit_code == 0, result.output
        for seed in (42, 43, 44):
            assert f"python scripts/run_tts_eval.py --config-path=../config system.seed={seed}" in result.output
        assert "label_s42[seed=44]" in result.output and "259200s" in result.output

    def test_options_after_the_command_belong_to_it(self):
        result = self.dry_run("-G", "1", "train.py", "-G", "2", "--timeout", "5")
        assert result.exit_code == 0, result.output
        assert "train.py -G 2 --timeout 5" in result.output and "259200s" in result.output

    def test_visible_devices_limit_what_a_job_may_ask_for(self, monkeypatch):
        monkeypatch.setenv("TS_VISIBLE_DEVICES", "1")
        result = self.dry_run("-G", "2", "train.py")
        assert result.exit_code == 2 and result.stderr.strip() == "error: the job asks for 2 GPUs; this machine has 2, visible to it 1"
