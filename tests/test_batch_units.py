"""The parts of a batch that need no server: item lists, templates, settings, thresholds that count
the rest of a pool, the report's pure parts, and `evalq batch run`'s one-line refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from flows.batch.items import BatchItem, read_item_list
from flows.batch.settings import BatchSettings
from flows.batch.templates import fill_argv, fill_parameters, parse_command, parse_pairs, values_for
from flows.campaign.dispatch import Dispatcher
from flows.campaign.thresholds import others_in_flight
from flows.naming import episode_run_name, job_id_of_run_name
from generate.errors import InputError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_an_item_list_is_one_id_a_line_without_blanks_comments_or_repeats(tmp_path):
    path = tmp_path / "items.txt"
    path.write_text("# batch of the week\n\nTX_2021-flood.v2\n  ca_0001  # trailing comment\nTX_2021-flood.v2\nuser@site+1\n")
    assert read_item_list(path) == ["TX_2021-flood.v2", "ca_0001", "user@site+1"]
    path.write_text("\ufeffa\nb\n")  # saved with a BOM
    assert read_item_list(path) == ["a", "b"]


@pytest.mark.parametrize("line, problem", [
    ("two words", "line 3: item id 'two words' has a space"),
    ("a/b", "line 3: item id 'a/b' has '/'"),
    ("batch:item", "line 3: item id 'batch:item' has ':'"),
    ("-dash-first", "line 3: item id '-dash-first' must start with a letter or a digit"),
    ("é", "line 3: item id 'é' has 'é'"),
    ("x" * 201, "line 3: item id of 201 characters (at most 200)"),
])
def test_a_bad_line_is_one_error_naming_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "items.txt"
    path.write_text(f"ok-1\n\n{line}\nok-2\n")
    with pytest.raises(InputError) as caught:
        read_item_list(path)
    assert str(caught.value).startswith(f"{path}: {problem}")


def test_an_item_list_without_items_or_file_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(InputError, match="no item ids"):
        read_item_list(empty)
    with pytest.raises(InputError, match="file not found"):
        read_item_list(tmp_path / "missing.txt")


def test_item_runs_are_named_after_the_batch_and_parse_back():
    assert job_id_of_run_name(episode_run_name("b30", "tile-03")) == "tile-03"
    assert job_id_of_run_name(episode_run_name("v2:dev", "tile-03", 4)) == "tile-03"
    assert job_id_of_run_name("final:team/pick/3") == "team/pick/3"  # episodes still parse
    assert job_id_of_run_name("team/pi:ck/3") == "team/pi:ck/3"


def test_the_command_is_filled_argument_by_argument_without_a_shell():
    argv = parse_command("python run.py --item {item} --out '{item_dir}/out put' {{literal}} $HOME;rm")
    filled = fill_argv(argv, values_for("a b;c", "b1", "/r", 2))
    assert filled == ["python", "run.py", "--item", "a b;c", "--out", "/r/a b;c/out put", "{literal}", "$HOME;rm"]


@pytest.mark.parametrize("command, problem", [
    ("run {itme}", "unknown placeholder {itme} (known: {item}, {item_dir}, {results_dir}, {batch}, {attempt})"),
    ("run {item", "expected '}' before end of string"),
    ("run 'unclosed", "No closing quotation"),
    ("   ", "--command is empty"),
])
def test_a_bad_command_template_is_one_error_naming_the_option(command, problem):
    with pytest.raises(InputError) as caught:
        parse_command(command)
    assert problem in str(caught.value) and str(caught.value).startswith("--command")


def test_parameters_are_json_unless_they_are_strings_which_are_templates():
    templates = parse_pairs(["item={item}", "code=007", "retries=2", "flags=[1, 2]", "note=a {{b}}", "name=\"{batch}\""],
                            "--parameter", templated=True)
    assert fill_parameters(templates, values_for("0042", "b1", "/r", 1)) == {
        "item": "0042", "code": "007", "retries": 2, "flags": [1, 2], "note": "a {b}", "name": "b1"}
    assert parse_pairs(["memory=16G", "gpus=2", "env={\"A\": \"1\"}"], "--job-variable", templated=False) == {
        "memory": "16G", "gpus": 2, "env": {"A": "1"}}
    with pytest.raises(InputError, match="--parameter 'item': expected key=value"):
        parse_pairs(["item"], "--parameter", templated=True)
    with pytest.raises(InputError, match="unknown placeholder {tile}"):
        parse_pairs(["item={tile}"], "--parameter", templated=True)


def test_settings_name_the_items_deployment_on_their_pool():
    common = dict(name="b", items_file="i.txt", results_dir="/r", max_in_flight=None, submit_interval=0.0, max_attempts=1,
                  stats_interval=60.0)
    command = BatchSettings(**common, command=["x"])
    assert (command.pool, command.deployment, command.window) == ("evalq-local", "batch-item/evalq-local", 100)
    assert BatchSettings(**common, command=["x"], pool="evalq-slurm").deployment == "batch-item/evalq-slurm"
    assert BatchSettings(**{**common, "max_in_flight": 7}, deployment="f/d").window == 7
    with pytest.raises(ValueError, match="give a command or a deployment"):
        BatchSettings(**common)


def test_the_rest_of_the_pool_counts_against_the_thresholds():
    dispatcher = Dispatcher({"p": 10}, prefetch=0, max_in_flight=4, resume_at=1)
    for i in range(6):
        dispatcher.add(BatchItem(id=f"i{i}", pool="p"))
    dispatcher.others_in_flight = others_in_flight(on_pool=3, own=0)  # three runs of someone else
    first = dispatcher.next()
    assert first is not None and dispatcher.next() is None and dispatcher.stopped  # 3 + 1 = 4: stop
    dispatcher.finished(first)
    dispatcher.others_in_flight = 2
    assert dispatcher.next() is None  # 2 > 1: still stopped
    dispatcher.others_in_flight = 1
    assert dispatcher.next() is not None  # at 1: resumed
    assert others_in_flight(on_pool=2, own=5) == 0


@pytest.mark.parametrize("item, name", [("day-3", "day-3"), ("../../x", "x"), ("team/task/0", "team-task-0"), ("..", "item")])
def test_a_failed_items_log_stays_in_the_report_folder_whatever_the_run_was_named(item, name):
    from flows.batch.report import log_name

    assert log_name(item) == name


def test_durations_and_the_summary_of_a_report():
    from prefect.client.schemas.objects import StateType

    from flows.batch.report import BatchReport, FailedItem, durations_of, failed_item_text, summary_markdown
    from flows.campaign.history import EpisodeRecord
    from flows.reports.report import build_report

    def record(item, attempt, state, seconds, message=""):
        return EpisodeRecord(run_id=f"{item}-{attempt}", job_id=item, attempt=attempt, pool="p", state_type=state,
                             state_name=state.value.title(), message=message, created=T0, start_time=T0,
                             end_time=T0 + dt.timedelta(seconds=seconds))

    records = [record("a", 1, StateType.COMPLETED, 2.0), record("b", 1, StateType.FAILED, 1.0, "x"),
               record("b", 2, StateType.COMPLETED, 6.0), record("c", 1, StateType.FAILED, 3.0, "exited | 3\nat c")]
    report = build_report("b1", records, set(), {}, planned=4)
    took = durations_of(records, ["a", "b"])
    assert (took.count, took.total, took.median, took.longest, took.longest_item) == (2, 8.0, 4.0, 6.0, "b")
    failed = FailedItem(item="c", run_id="c-1", attempt=1, state="Failed", message="exited | 3\nat c", ended=T0,
                        log="failed/c.log", log_lines=["12:00:00.000 INFO    processing c"])
    text = summary_markdown(BatchReport(batch="b1", report=report, durations=took, failed_items=[failed]))
    assert "| 4 | 2 | 1 | 0 | 0 | 1 |" in text and "- [`c`](failed/c.log): Failed: exited \\| 3 at c" in text
    assert failed_item_text(failed).endswith("--- the last 1 lines of its log ---\n12:00:00.000 INFO    processing c\n")


def test_a_report_folder_keeps_no_file_of_an_item_that_is_not_failed_any_more(tmp_path):
    from flows.batch.report import BatchReport, Durations, FailedItem, write_report_folder
    from flows.reports.report import build_report

    def folder_of(failed: list[str]) -> BatchReport:
        report = build_report("b1", [], set(), {}).model_copy(update={"resubmit": failed})
        items = [FailedItem(item=i, run_id="r", attempt=1, state="Failed", message="m", ended=None, log=f"failed/{i}.log")
                 for i in failed]
        return BatchReport(batch="b1", report=report, durations=Durations(), failed_items=items)

    write_report_folder(folder_of(["a", "b"]), tmp_path)
    write_report_folder(folder_of(["b"]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == ["b.log"]
    assert (tmp_path / "failed_items.txt").read_text() == "b\n"


# -- `evalq batch run` refuses bad input in one line, before any server ---------------------------
def evalq_here(*args: str):
    from typer.testing import CliRunner

    from flows.cli.root import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("extra, problem", [
    ([], "give the pipeline as --command 'argv template' or as --deployment FLOW/DEPLOYMENT (one of them)"),
    (["--command", "x {item}", "--deployment", "f/d"], "(one of them)"),
    (["--command", "x {item}", "--parameter", "item={item}"], "--parameter is for --deployment's flow"),
    (["--deployment", "f/d", "--timeout", "5"], "--timeout bounds a --command"),
    (["--command", "x {item}", "--count", "cluster"], "--count 'cluster': own or pool"),
    (["--command", "x {item}", "--keep-for", "soon"], "--keep-for 'soon': expected a number and a unit"),
    (["--command", "x {item}", "--resume-threshold", "2"], "--resume-at needs --max-in-flight"),
    (["--command", "x {item}", "--stop-threshold", "3", "--resume-threshold", "-1"], "--resume-at -1: dispatch would never resume"),
    (["--command", "x {item}", "--stop-threshold", "5", "--resume-threshold", "9"], "--resume-at 9: below --max-in-flight 5"),
    (["--command", "x {item"], "--command 'x {item': expected '}'"),
    (["--command", "x", "--job-variable", "memory"], "--job-variable 'memory': expected key=value"),
    (["--deployment", "touch-item"], "--deployment 'touch-item': expected FLOW/DEPLOYMENT"),
])
def test_batch_run_refuses_bad_options_in_one_line(tmp_path, extra, problem):
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    result = evalq_here("batch", "run", "--name", "b", "--items", str(items), *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and problem in result.stderr, result.stderr


def test_batch_run_names_the_bad_line_of_the_item_list(tmp_path):
    items = tmp_path / "items.txt"
    items.write_text("a\nb c\n")
    result = evalq_here("batch", "run", "--name", "b", "--items", str(items), "--command", "x {item}")
    assert result.exit_code == 2
    assert result.stderr == f"error: {items}: line 2: item id 'b c' has a space (letters, digits and . _ - + = @ only)\n"


def test_batch_run_refuses_an_empty_name(tmp_path):
    items = tmp_path / "items.txt"
    items.write_text("a\n")
    result = evalq_here("batch", "run", "--name", " ", "--items", str(items), "--command", "x {item}")
    assert result.exit_code == 2 and result.stderr == "error: --name is empty: a batch needs a name (its runs, tags and keys carry it)\n"


def test_batch_report_refuses_a_report_dir_that_is_a_file_before_reading_any_server(tmp_path):
    taken = tmp_path / "report"
    taken.write_text("not a folder")
    result = evalq_here("batch", "report", "b", "--report-dir", str(taken), "--api", "http://127.0.0.1:9/api")
    assert result.exit_code == 2 and result.stderr == f"error: {taken}: --report-dir is not a directory\n"


def test_a_pipeline_line_over_the_limit_is_logged_in_pieces_with_nothing_dropped():
    """A command printing 3 MiB without a newline (a progress bar, a JSON blob): every byte reaches
    the log, then the lines after it (the stream's limit is 1 MiB; redaction is linear in it)."""
    import asyncio
    import sys

    from flows.batch.pipeline import LINE_LIMIT, Command

    class Logged:
        def __init__(self):
            self.lines: list[str] = []

        def info(self, _format, _prefix, line):
            self.lines.append(line)

    async def forward_all():
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write('x' * (3 << 20) + '\\nmid\\nend')",
            stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        reader = Command.__new__(Command)
        reader.logger, reader.secrets, reader.last_stderr = Logged(), [], ""
        await asyncio.wait_for(reader.forward(process.stdout, False), 120)  # a bound against a hang, not a goal
        await process.wait()
        return reader.logger.lines

    lines = asyncio.run(forward_all())
    assert sum(len(line) for line in lines[:-2]) == 3 << 20 and set("".join(lines[:-2])) == {"x"}
    assert lines[-2:] == ["mid", "end"] and "" not in lines and max(map(len, lines)) <= LINE_LIMIT
