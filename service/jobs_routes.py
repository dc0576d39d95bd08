"""``/jobs``: long recordings enhanced in the background (:mod:`enhancer.jobs`).

``POST /jobs`` streams the upload to disk as it arrives (a raw body chunk by chunk; a
multipart file from the parser's spooled file), checks its header against the job limits,
and answers 202 with the job; the runner enhances it block by block. A job belongs to the
key that made it: another key gets 404 for it, as for an id that does not exist.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator, BaseModel, Field
from starlette.applications import Starlette
from starlette.routing import Route

from enhancer.apps.enhance_files import open_source
from enhancer.audio.decode import open_audio
from enhancer.errors import TooLarge
from enhancer.jobs.runner import JobRunner
from enhancer.jobs.store import QUEUED, RUNNING, JobRecord, JobStore, NewJob, new_job_id
from enhancer.registry import ModelRegistry
from service.deps import ModelsDep, SettingsDep
from service.enhance_request import (
    RAW_BODY_OPENAPI,
    AudioOptions,
    EnhanceForm,
    EnhanceRequest,
    read_enhance_request,
)
from service.routes import content_disposition, operation_id
from service.schemas import ErrorMessage, error
from service.settings import Settings

jobs_router = APIRouter(prefix="/jobs", tags=["jobs"],
                        generate_unique_id_function=operation_id)

# Bytes gathered from a raw body before each write to disk (one thread hop per write).
WRITE_BYTES = 1 << 20


class JobInfo(BaseModel):
    """A job: what it is doing, how far it is, where its result is."""

    id: str = Field(description="random, 128 bits")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float = Field(description="0 to 1: the share of the audio enhanced so far")
    audio_seconds: float = Field(description="length of the audio (0 if the header did not "
                                             "say)")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    eta_s: float | None = Field(None, description="seconds left, estimated, while running")
    error: str | None = Field(None, description="why it failed: the detail /enhance gives")
    result_url: str | None = Field(None, description="where to download the result, once "
                                                     "succeeded")
    filename: str | None = None
    model: str | None = None


class JobList(BaseModel):
    """A page of the caller's jobs, newest first."""

    jobs: list[JobInfo]
    next: str | None = Field(None, description="the next page's URL, if there is one")


def job_info(record: JobRecord) -> JobInfo:
    """The job as the API shows it (and as its callback receives it)."""
    eta = None
    if record.status == RUNNING and record.started_at and record.progress > 0:
        elapsed = time.time() - record.started_at
        eta = round(elapsed * (1 - record.progress) / record.progress, 1)
    return JobInfo(id=record.id, status=record.status, progress=record.progress,
                   audio_seconds=record.audio_seconds, created_at=_when(record.created_at),
                   started_at=_when(record.started_at), finished_at=_when(record.finished_at),
                   eta_s=eta, error=record.error,
                   result_url=(f"/jobs/{record.id}/result" if record.status == "succeeded"
                               else None),
                   filename=record.filename, model=record.model)


def _when(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


# ---------------------------------------------------------------------- dependencies

CALLBACK_FIELD = Field(description="POSTed the job's JSON when it ends, signed "
                                   "(X-Enhancer-Signature: sha256=HMAC of the body)")


def _http_url(url: str | None) -> str | None:
    """``callback_url`` must be an absolute http or https URL."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


CallbackUrl = Annotated[str | None, CALLBACK_FIELD, AfterValidator(_http_url)]


class JobOptions(AudioOptions):
    """``POST /enhance``'s options, and where to tell when the job ends."""

    callback_url: CallbackUrl = None


class JobForm(EnhanceForm):
    """The multipart form: the audio, its options, the callback."""

    callback_url: CallbackUrl = None


async def parse_job_request(
        request: Request, form: Annotated[JobForm, Form(media_type="multipart/form-data")],
        query: Annotated[JobOptions, Query()]) -> EnhanceRequest:
    """As ``POST /enhance``'s, by the same rules, with ``callback_url`` allowed too."""
    return await read_enhance_request(request, form, query)


JobRequestDep = Annotated[EnhanceRequest, Depends(parse_job_request)]

# In the OpenAPI schema only when the service has keys (service.app adds it then), as for
# /enhance: an open service documents no key.
job_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed when the service has API_KEY or API_KEYS.")


def job_owner(request: Request) -> str:
    """The name of the caller's key ("" when the service has none): whose jobs it sees."""
    settings: Settings = request.app.state.settings
    keys = settings.api_keys
    if not keys:
        return ""
    given = request.headers.get("x-api-key", "").encode()
    found = [name for name, expected in keys.items()
             if secrets.compare_digest(given, expected.encode())]
    if not found:
        raise HTTPException(401, "a valid X-API-Key header is required")
    return found[0]


def get_store(request: Request) -> JobStore:
    return request.app.state.job_store


def get_runner(request: Request) -> JobRunner:
    return request.app.state.job_runner


OwnerDep = Annotated[str, Depends(job_owner)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
KEYED: dict[int | str, dict[str, Any]] = {
    401: error("X-API-Key is missing or wrong (only when the service has API keys).")}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **KEYED, 404: error("No job with this id belongs to this key."),
    422: error("A parameter is invalid.")}


async def _owned(store: JobStore, job_id: str, owner: str) -> JobRecord:
    record = await asyncio.to_thread(store.get, job_id, owner)
    if record is None:
        raise HTTPException(404, f"no job {job_id}")
    return record


# ---------------------------------------------------------------------- routes

@jobs_router.post("", status_code=202, response_model=JobInfo, summary="Start a job",
                  openapi_extra=RAW_BODY_OPENAPI,
                  responses={**KEYED,
                             400: error("The body is not valid multipart/form-data."),
                             404: error("The model named in `model` does not exist."),
                             408: error("The upload paused for more than BODY_TIMEOUT_S."),
                             413: error("Longer than JOB_MAX_AUDIO_SECONDS, or too many "
                                        "channels."),
                             415: error("The audio format is not supported."),
                             422: error("The audio's header or a parameter is invalid."),
                             503: error("JOBS_MAX_QUEUED jobs are queued already."),
                             507: error("The jobs' disk budget (JOBS_MAX_DISK_MB) is full.")})
async def create_job(asked: JobRequestDep, owner: OwnerDep, store: StoreDep,
                     runner: RunnerDep, models: ModelsDep, settings: SettingsDep,
                     response: Response,
                     idempotency_key: Annotated[str | None, Header(
                         max_length=200, description="the same key returns the same job "
                                                     "instead of a second one")] = None,
                     ) -> JobInfo:
    """Upload audio as for `POST /enhance`; it is enhanced in the background.

    Answers `202 Accepted` at once, with `Location: /jobs/{id}`; follow the job there, then
    download `result_url`.
    """
    existing = await asyncio.to_thread(store.by_idempotency_key, owner, idempotency_key)
    if existing is None:
        models.get(asked.options.model)  # an unknown model: 404 before any upload is kept
        await asyncio.to_thread(_check_room, store, settings, asked.request)
        job_id = new_job_id()
        try:
            new = await _receive(asked, job_id, owner, store, settings, models,
                                 getattr(asked.options, "callback_url", None),
                                 idempotency_key)
        except BaseException:
            await asyncio.to_thread(store.remove_files, job_id)
            raise
        record, created = await asyncio.to_thread(store.add, job_id, new)
        if created:
            runner.wake()
    else:
        record = existing
    response.headers["Location"] = f"/jobs/{record.id}"
    return job_info(record)


def _check_room(store: JobStore, settings: Settings, request: Request) -> None:
    """Refuse at once when the queue is full, or the declared upload cannot fit the disk."""
    counts = store.counts()
    if counts[QUEUED] + counts[RUNNING] >= settings.JOBS_MAX_QUEUED:
        raise HTTPException(503, f"{settings.JOBS_MAX_QUEUED} jobs are queued or running, "
                                 f"the limit JOBS_MAX_QUEUED; retry later",
                            headers={"Retry-After": "10"})
    declared = request.headers.get("content-length", "")
    _check_disk(store, settings, int(declared) if declared.isdigit() else 0)


def _check_disk(store: JobStore, settings: Settings, upload_bytes: int) -> None:
    """507 if the jobs' files plus this upload and its result would pass JOBS_MAX_DISK_MB."""
    _check_fits(settings, store.disk_used(), upload_bytes)


def _check_fits(settings: Settings, used: float, upload_bytes: int) -> None:
    if used + 2 * upload_bytes > settings.JOBS_MAX_DISK_MB * 1e6:
        raise HTTPException(507, f"the jobs' disk budget is full: jobs hold "
                                 f"{used / 1e6:.0f} MB of JOBS_MAX_DISK_MB="
                                 f"{settings.JOBS_MAX_DISK_MB:g}; this upload and its result "
                                 f"need about {2 * upload_bytes / 1e6:.0f} MB more")


async def _receive(asked: EnhanceRequest, job_id: str, owner: str, store: JobStore,
                   settings: Settings, models: ModelRegistry, callback_url: str | None,
                   idempotency_key: str | None) -> NewJob:
    """Write the upload to the job's input (a temporary name, renamed once whole) and read
    its header: the job to add."""
    folder = await asyncio.to_thread(store.staging, job_id)
    partial = folder / "input.tmp"
    if asked.file is not None:
        await asyncio.to_thread(_copy_file, asked.file.file, partial)
        filename = asked.file.filename
    else:
        await _save_body(asked.request, partial, store, settings)
        filename = None
    size = partial.stat().st_size
    await asyncio.to_thread(_check_disk, store, settings, size)
    options = asked.options
    seconds, media_type = await asyncio.to_thread(_probe, partial, options.format.value,
                                                  options.sample_rate, settings)
    await asyncio.to_thread(os.replace, partial, store.input_path(job_id))
    return NewJob(owner=owner, audio_seconds=seconds, disk_bytes=2 * size,
                  media_type=media_type, raw_format=options.format.value,
                  sample_rate=options.sample_rate, model=options.model or models.default_name,
                  atten_lim_db=options.atten_lim_db, filename=filename,
                  callback_url=callback_url, idempotency_key=idempotency_key)


def _copy_file(source: BinaryIO, target: Path) -> None:
    source.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, WRITE_BYTES)
        out.flush()
        os.fsync(out.fileno())


async def _save_body(request: Request, target: Path, store: JobStore,
                     settings: Settings) -> None:
    """The raw body to ``target`` as it arrives, a megabyte at a time; 408 when it pauses
    longer than BODY_TIMEOUT_S, 507 once it passes the disk budget."""
    used = await asyncio.to_thread(store.disk_used)
    out = await asyncio.to_thread(open, target, "wb")
    try:
        pending: list[bytes] = []
        gathered = written = 0
        chunks = request.stream().__aiter__()
        while True:
            try:
                async with asyncio.timeout(settings.BODY_TIMEOUT_S):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise HTTPException(408, f"the upload paused for more than "
                                         f"{settings.BODY_TIMEOUT_S:g} s (BODY_TIMEOUT_S)"
                                    ) from None
            pending.append(chunk)
            gathered += len(chunk)
            _check_fits(settings, used, written + gathered)  # refused as soon as it passes
            if gathered >= WRITE_BYTES:
                await asyncio.to_thread(out.write, b"".join(pending))
                written += gathered
                pending, gathered = [], 0
        await asyncio.to_thread(_finish_write, out, b"".join(pending))
    finally:
        out.close()


def _finish_write(out: BinaryIO, rest: bytes) -> None:
    out.write(rest)
    out.flush()
    os.fsync(out.fileno())


def _probe(path: Path, raw_format: str, sample_rate: int | None,
           settings: Settings) -> tuple[float, str]:
    """The audio's length and media type from its header, checked against the job limits
    (413; 415 or 422 for a header that is not audio this reads)."""
    with open_source(path) as f, open_audio(f, raw_format, sample_rate) as reader:
        info = reader.info
    if info.channels > settings.MAX_CHANNELS:
        raise TooLarge(f"the audio has {info.channels} channels; the limit is "
                       f"MAX_CHANNELS={settings.MAX_CHANNELS}")
    seconds = info.seconds or 0.0
    if seconds > settings.JOB_MAX_AUDIO_SECONDS:
        raise TooLarge(f"the audio is {seconds:.1f} s long; the limit is "
                       f"JOB_MAX_AUDIO_SECONDS={settings.JOB_MAX_AUDIO_SECONDS:g}")
    return seconds, info.format.media_type


@jobs_router.get("", response_model=JobList, summary="List your jobs, newest first",
                 responses={**KEYED, 422: error("`limit` or `offset` is out of range.")})
async def list_jobs(owner: OwnerDep, store: StoreDep, request: Request,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20,
                    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0) -> JobList:
    records = await asyncio.to_thread(store.page, owner, limit + 1, offset)
    following = (str(request.url.include_query_params(limit=limit, offset=offset + limit))
                 if len(records) > limit else None)
    return JobList(jobs=[job_info(r) for r in records[:limit]], next=following)


@jobs_router.get("/{job_id}", response_model=JobInfo, summary="A job's status and progress",
                 responses=NOT_FOUND)
async def get_job(job_id: str, owner: OwnerDep, store: StoreDep) -> JobInfo:
    return job_info(await _owned(store, job_id, owner))


@jobs_router.get("/{job_id}/result", response_class=FileResponse,
                 summary="Download a job's result (Range supported)",
                 responses={**NOT_FOUND,
                            409: {"model": ErrorMessage, "description": "Not succeeded."},
                            200: {"description": "The enhanced audio, in the format, "
                                                 "rate, channels and length sent.",
                                  "content": {"application/octet-stream": {}}}})
async def get_job_result(job_id: str, owner: OwnerDep, store: StoreDep) -> FileResponse:
    record = await _owned(store, job_id, owner)
    if record.status != "succeeded":
        raise HTTPException(409, f"job {job_id} is {record.status}: no result"
                                 + (f" ({record.error})" if record.error else ""))
    path = store.result_path(job_id)
    if not path.is_file():
        raise HTTPException(404, f"the result of job {job_id} is gone")
    return FileResponse(path, media_type=record.media_type,
                        headers={"Content-Disposition": content_disposition(record.filename)})


@jobs_router.delete("/{job_id}", response_model=JobInfo, responses=NOT_FOUND,
                    summary="Cancel a job (or delete an ended one) and its files")
async def delete_job(job_id: str, owner: OwnerDep, store: StoreDep) -> JobInfo:
    record = await asyncio.to_thread(store.cancel, job_id, owner)
    if record is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_info(record)



def allowed_methods(app: Starlette, path: str) -> str:
    """Every method some route serves at ``path``, for a 405's ``Allow`` (Starlette's lists
    only the first matching route's, and ``/jobs`` and ``/jobs/{id}`` have two each)."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.path_regex.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))
