"""The grading HTTP API (a contract: researchers' curl lines and scripts call it as it is).

Every answer is built from Prefect (the job's flow run) and the results dir (its files); the
app holds nothing else, so a restarted API serves every earlier job.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from pydantic import ValidationError

from flows.grader import jobs, nodes, placement, store
from flows.grader.auth import TokenBook
from flows.grader.command import is_overdue, timeout_for
from flows.grader.models import (
    CancelAnswer,
    GradingConfig,
    GradingJob,
    JobResults,
    JobsAnswer,
    JobStatus,
    JobSummary,
    NodeInfo,
    NodesAnswer,
    Status,
    SubmitAccepted,
    SubmitOutcome,
)
from generate.jsonio import describe_validation_error

MAX_CONFIG_BYTES = 64 * 1024
MULTIPART_OVERHEAD = 16 * 1024


@dataclass(frozen=True)
class GraderSettings:
    """What `evalq grader serve` was started with."""

    tokens: TokenBook = field(repr=False)
    grade_argv: list[str]
    results_dir: Path
    grade_cwd: Path | None = None
    """Where the grading command runs; None: each job's work dir."""
    max_upload_bytes: int = 10 * 1024 * 1024
    max_wait_seconds: float = 14400.0
    timeout_factor: float | None = None
    """Opt-in: kill a job at expected_time x this (at least `timeout_floor`)."""
    timeout_floor: float = 60.0
    max_job_seconds: float | None = None
    """Opt-in: kill a job after this long whatever its expected_time."""
    poll_seconds: float = 0.5


def bad(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


async def read_upload(upload: UploadFile, limit: int, part: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise bad(413, f"{part}: larger than {limit} bytes")
    return data


def parse_config(raw: bytes) -> GradingConfig:
    """The submission's YAML config, or a 400/422 naming what is wrong (never echoing the token)."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad(400, "config_file: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise bad(400, "config_file: YAML does not parse" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(data, dict):
        raise bad(422, "config_file: expected a mapping with competition_id, project_id, user_id, expected_time, token")
    try:
        return GradingConfig.model_validate(data)
    except ValidationError as exc:
        raise bad(422, f"config_file: {describe_validation_error(exc)}") from None


def check_solution(upload: UploadFile, data: bytes) -> str:
    name = upload.filename or ""
    if not name.endswith(".py"):
        raise bad(400, f"code: expected a .py file, got {name!r}")
    if not data.strip():
        raise bad(400, f"code: {name} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(400, f"code: {name} is not UTF-8 text") from None


def bearer_token(request: Request) -> str:
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    if scheme.lower() != "bearer" or not token:
        raise bad(401, "Authorization: expected 'Bearer TOKEN'")
    return token


def create_app(settings: GraderSettings) -> FastAPI:
    app = FastAPI(
        title="evalq grading service",
        description="Submit a solution file, get it graded on a node, fetch its results.",
    )
    body_limit = settings.max_upload_bytes + MAX_CONFIG_BYTES + MULTIPART_OVERHEAD
    placing = asyncio.Lock()  # two submissions at once must not both see the same node as the shortest

    @app.exception_handler(RequestValidationError)
    async def one_line_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        return JSONResponse(status_code=422, content={"detail": f"{where}: {first['msg']}"})

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        """Answer 413 before a body far beyond the limits is read and spooled to disk."""
        declared = request.headers.get("content-length", "")
        if request.url.path == "/api/submit" and declared.isdigit() and int(declared) > body_limit:
            return JSONResponse(status_code=413, content={"detail": f"request: larger than {body_limit} bytes"})
        return await call_next(request)

    @app.exception_handler(httpx.HTTPError)
    async def prefect_unreachable(request: Request, exc: httpx.HTTPError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"Prefect API unavailable ({exc.__class__.__name__})"})

    def workdir(run: FlowRun) -> Path:
        return store.work_dir(settings.results_dir, jobs.job_of(run).user_id, str(run.id))

    async def read_run(client, job_id: str) -> FlowRun:
        run = await jobs.read_job(client, job_id)
        if run is None:
            raise bad(404, f"job {job_id}: not found")
        return run

    def overdue(run: FlowRun, record) -> bool:
        """Its command ran (or runs) past its expected_time."""
        started = (record.started_at if record else None) or run.start_time
        ended = (record.completed_at if record else None) or (run.end_time if run.state and run.state.is_final() else None)
        return is_overdue(jobs.job_of(run).expected_time, started, ended, datetime.now(timezone.utc))

    def results_of(run: FlowRun) -> JobResults:
        stdout, stderr = store.read_outputs(workdir(run))
        record = store.read_record(workdir(run))
        return JobResults(
            job_id=str(run.id), status=jobs.status_of(run.state), stdout=stdout, stderr=stderr,
            exit_code=record.exit_code if record else None, started_at=run.start_time, completed_at=run.end_time,
            overdue=overdue(run, record),
        )

    async def node_ids(client, runs: list[FlowRun]) -> dict[str, int]:
        """Node name -> id, read only when a job of an older evalq lacks its node id."""
        if not any(jobs.lacks_node_id(run) for run in runs):
            return {}
        return {node.name: node.node_id for node in await nodes.read_nodes(client)}

    async def choose_node(client) -> nodes.Node:
        """The active node (any node, if none is active) with the least expected work queued."""
        known = await nodes.read_nodes(client)
        if not known:
            raise bad(503, "no grading nodes: start the server with --nodes N or run `evalq grader node`")
        candidates = sorted([node for node in known if node.active] or known, key=lambda node: node.name)  # ties: name order
        loads = placement.node_loads([node.name for node in candidates], await jobs.active_jobs(client))
        chosen = placement.choose_node(loads)
        return next(node for node in candidates if node.name == chosen)

    @app.post("/api/submit", response_model=SubmitOutcome | SubmitAccepted)
    async def submit(
        code: UploadFile = File(..., description="The solution, a .py file"),
        config_file: UploadFile = File(..., description="YAML: competition_id, project_id, user_id, expected_time, token"),
        wait: bool = Query(True, description="Answer when the job ends (up to the server's --max-wait-seconds)"),
    ):
        """Queue a grading job on the node with the shortest queue; wait for it unless `wait=false`."""
        source = check_solution(code, await read_upload(code, settings.max_upload_bytes, "code"))
        config = parse_config(await read_upload(config_file, MAX_CONFIG_BYTES, "config_file"))
        if not await run_in_threadpool(settings.tokens.verify, config.user_id, config.token.get_secret_value()):
            raise bad(401, f"config_file: token is not user {config.user_id!r}'s")
        staged = await run_in_threadpool(store.stage_upload, settings.results_dir, source)
        job = GradingJob(
            user_id=config.user_id, project_id=config.project_id, competition_id=config.competition_id,
            expected_time=config.expected_time,
            timeout_seconds=timeout_for(config.expected_time, settings.timeout_factor, settings.timeout_floor,
                                        settings.max_job_seconds),
            staged_solution=str(staged), results_dir=str(settings.results_dir), grade_argv=settings.grade_argv,
            grade_cwd=str(settings.grade_cwd) if settings.grade_cwd else None,
        )
        async with get_client() as client:
            try:
                async with placing:
                    node = await choose_node(client)
                    run = await jobs.create_job(client, job, node.name, node.node_id)
            except BaseException:
                store.discard_upload(staged)
                raise
            if not wait:
                return SubmitAccepted(
                    job_id=str(run.id), node_id=node.node_id, node_name=node.name, created_at=run.created,
                    message=f"queued on node {node.node_id} ({node.name}); see /api/status/{run.id}",
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + settings.max_wait_seconds
            while not (run.state and run.state.is_final()) and loop.time() < deadline:
                await asyncio.sleep(min(settings.poll_seconds, max(0.0, deadline - loop.time())))
                run = await client.read_flow_run(run.id)
        final = run.state is not None and run.state.is_final()
        message = None if final else (
            f"still {jobs.status_of(run.state)} after {settings.max_wait_seconds:g} s; it keeps going: "
            f"see /api/status/{run.id} and /api/results/{run.id}"
        )
        return SubmitOutcome(**results_of(run).model_dump(), node_id=node.node_id, node_name=node.name, message=message)

    @app.get("/api/status/{job_id}", response_model=JobStatus)
    async def status(job_id: str):
        async with get_client() as client:
            run = await read_run(client, job_id)
            position = None
            if jobs.status_of(run.state) == "pending":
                position = placement.queue_position(str(run.id), run.work_queue_name, await jobs.active_jobs(client))
            ids = await node_ids(client, [run])
        record = store.read_record(workdir(run))
        return JobStatus(
            job_id=str(run.id), status=jobs.status_of(run.state), node_id=jobs.node_id_of(run, ids),
            node_name=run.work_queue_name or "", queue_position=position, created_at=run.created,
            started_at=run.start_time, completed_at=run.end_time, exit_code=record.exit_code if record else None,
            expected_time=jobs.job_of(run).expected_time, overdue=overdue(run, record),
        )

    @app.get("/api/results/{job_id}", response_model=JobResults)
    async def results(job_id: str):
        async with get_client() as client:
            return results_of(await read_run(client, job_id))

    @app.post("/api/cancel/{job_id}", response_model=CancelAnswer)
    async def cancel(job_id: str, request: Request):
        """Only the job's owner (`Authorization: Bearer TOKEN`); a finished job answers 409."""
        token = bearer_token(request)
        caller = await run_in_threadpool(settings.tokens.owner_of, token)
        if caller is None:
            raise bad(401, "Authorization: unknown token")
        async with get_client() as client:
            run = await read_run(client, job_id)
            if jobs.job_of(run).user_id != caller:
                raise bad(403, f"job {job_id}: not yours")
            status_before = jobs.status_of(run.state)
            if run.state is not None and run.state.is_final():
                raise bad(409, f"job {job_id}: already {status_before}")
            status_after = await jobs.cancel_job(client, run)
        if status_after != "cancelled":
            raise bad(409, f"job {job_id}: already {status_after}")
        if status_before == "pending":
            store.discard_upload(jobs.job_of(run).staged_solution)
            return CancelAnswer(message=f"job {job_id} cancelled before it started")
        return CancelAnswer(message=f"job {job_id} cancelled; its grading process is being killed")

    @app.get("/api/nodes", response_model=NodesAnswer)
    async def list_nodes():
        async with get_client() as client:
            known = await nodes.read_nodes(client)
            loads = placement.node_loads([node.name for node in known], await jobs.active_jobs(client))
        return NodesAnswer(nodes=[
            NodeInfo(
                node_id=node.node_id, node_name=node.name, ip=node.ip, queue_length=loads[node.name].queue_length,
                total_wait_time=loads[node.name].total_wait_time, status="active" if node.active else "inactive",
                state=node.state,
            )
            for node in known
        ])

    @app.get("/api/jobs", response_model=JobsAnswer)
    async def list_jobs(
        user_id: str | None = Query(None), status: Status | None = Query(None), limit: int = Query(50, ge=1, le=500),
    ):
        """Recent jobs, newest first."""
        async with get_client() as client:
            runs = await jobs.list_jobs(client, user_id or None, status, limit)
            ids = await node_ids(client, runs)
        return JobsAnswer(jobs=[
            JobSummary(
                job_id=str(run.id), user_id=jobs.job_of(run).user_id, status=jobs.status_of(run.state),
                node_id=jobs.node_id_of(run, ids), node_name=run.work_queue_name or "", created_at=run.created,
                completed_at=run.end_time,
            )
            for run in runs
        ])

    return app
