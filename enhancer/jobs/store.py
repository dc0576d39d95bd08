"""The job store: records in a database (SQLAlchemy 2), files in a folder beside it.

SQLite in WAL mode under ``JOBS_DIR`` by default, PostgreSQL by URL: one code path. A job's
files are ``files/<id>/input`` and ``files/<id>/result``, each written to a temporary name
and renamed, so neither is ever seen half-written; its record is added only once its input
is whole, so a server killed during an upload leaves no job (or a whole one) behind.

A runner *claims* a job with one conditional ``UPDATE`` (queued, or running under a lease
that ran out), which at most one runner wins, whatever the number of processes or machines;
it renews the lease as it goes, and every later write is conditional on still holding it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ENDED = (SUCCEEDED, FAILED, CANCELLED)


class _Base(DeclarativeBase):
    pass


class JobRecord(_Base):
    """One job, as stored. Times are seconds since the epoch."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    audio_seconds: Mapped[float] = mapped_column(Float)
    # What the job holds on disk: its input and (estimated until written) its result.
    disk_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(300))
    media_type: Mapped[str] = mapped_column(String(100))
    raw_format: Mapped[str] = mapped_column(String(16))
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    atten_lim_db: Mapped[float | None] = mapped_column(Float)
    callback_url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float)
    runner: Mapped[str | None] = mapped_column(String(200))
    runs: Mapped[int] = mapped_column(Integer, default=0)  # times claimed


@dataclass(frozen=True)
class NewJob:
    """What a job is created with; its input file is already in place (``Store.staging``)."""

    owner: str
    audio_seconds: float
    disk_bytes: int
    media_type: str
    raw_format: str
    sample_rate: int | None = None
    model: str | None = None
    atten_lim_db: float | None = None
    filename: str | None = None
    callback_url: str | None = None
    idempotency_key: str | None = None


def new_job_id() -> str:
    """A random id: 128 bits, never sequential, so ids cannot be guessed; in hex, so it is
    one word in a URL, a file name and a command line (URL-safe base64 starts with "-" one
    time in 64, which a command line's parser takes for an option)."""
    return secrets.token_hex(16)


def runner_name() -> str:
    """Who holds a claim: host, process and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'jobs.db'}"


class JobStore:
    """Job records and files: the one place that reads or writes either."""

    def __init__(self, folder: Path, url: str | None = None) -> None:
        self.folder = folder
        self.files = folder / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        url = url or _sqlite_url(folder)
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            _Base.metadata.create_all(self.engine)
        except DBAPIError:  # another front end created the table at the same moment
            _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ files

    def input_path(self, job_id: str) -> Path:
        return self.files / job_id / "input"

    def result_path(self, job_id: str) -> Path:
        return self.files / job_id / "result"

    def staging(self, job_id: str) -> Path:
        """The folder a new job's input is written into, before its record exists."""
        folder = self.files / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.files / job_id, ignore_errors=True)

    def remove_strays(self, min_age_s: float) -> int:
        """Delete the folders of uploads that never became jobs (the server was killed while
        receiving them), untouched for ``min_age_s``; uploads in progress are left alone."""
        now = time.time()
        with self._session() as session:
            known = set(session.scalars(select(JobRecord.id)))
        removed = 0
        for folder in self.files.iterdir():
            if folder.name in known or not folder.is_dir():
                continue
            try:
                newest = max([folder.stat().st_mtime, *(p.stat().st_mtime
                                                         for p in folder.iterdir())])
            except OSError:
                continue
            if now - newest > min_age_s:
                self.remove_files(folder.name)
                removed += 1
        return removed

    # ------------------------------------------------------------------ records

    def add(self, job_id: str, new: NewJob) -> tuple[JobRecord, bool]:
        """Add the job; with an idempotency key already used by its owner, return that job
        instead (and False), its files kept, the new ones removed."""
        record = JobRecord(id=job_id, status=QUEUED, progress=0.0, created_at=time.time(),
                           runs=0, **new.__dict__)
        try:
            with self._session.begin() as session:
                session.add(record)
        except IntegrityError:
            existing = self.by_idempotency_key(new.owner, new.idempotency_key)
            if existing is None:
                raise
            self.remove_files(job_id)
            return existing, False
        return record, True

    def by_idempotency_key(self, owner: str, key: str | None) -> JobRecord | None:
        if key is None:
            return None
        with self._session() as session:
            return session.scalars(select(JobRecord).where(
                JobRecord.owner == owner, JobRecord.idempotency_key == key)).first()

    def get(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """The job, if it exists and (with ``owner``) belongs to ``owner``."""
        with self._session() as session:
            record = session.get(JobRecord, job_id)
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    def page(self, owner: str, limit: int, offset: int = 0) -> list[JobRecord]:
        """The owner's jobs, newest first."""
        with self._session() as session:
            return [*session.scalars(
                select(JobRecord).where(JobRecord.owner == owner)
                .order_by(JobRecord.created_at.desc(), JobRecord.id)
                .limit(limit).offset(offset))]

    def claim(self, runner: str, lease_s: float) -> JobRecord | None:
        """Take the oldest job that is queued (or whose runner's lease ran out): one
        conditional UPDATE, so exactly one runner wins it."""
        now = time.time()
        claimable = or_(JobRecord.status == QUEUED,
                        (JobRecord.status == RUNNING) & (JobRecord.lease_until < now))
        with self._session() as session:
            candidates = session.scalars(select(JobRecord.id).where(claimable)
                                         .order_by(JobRecord.created_at).limit(8)).all()
        # Each UPDATE a transaction of its own that writes from its start (SQLite would
        # refuse to turn a reading transaction into a writing one while another writes).
        for job_id in candidates:
            with self._session.begin() as session:
                won = session.execute(
                    update(JobRecord).where(JobRecord.id == job_id, claimable).values(
                        status=RUNNING, runner=runner, lease_until=now + lease_s,
                        started_at=func.coalesce(JobRecord.started_at, now),
                        runs=JobRecord.runs + 1))
            if _count(won) == 1:
                return self.get(job_id)
        return None

    def requeue_orphans(self, current: str) -> int:
        """Queue again the running jobs whose runner, on this host, is dead (a server
        killed mid-job), at once rather than when their lease runs out. ``current``: this
        process's runner, the one live holder with this pid."""
        host = socket.gethostname()
        with self._session() as session:
            held = session.execute(select(JobRecord.id, JobRecord.runner).where(
                JobRecord.status == RUNNING, JobRecord.runner.like(f"{host}:%"))).all()
        requeued = 0
        for job_id, runner in held:
            if runner is None or runner == current or _alive(runner, current):
                continue
            with self._session.begin() as session:
                done = session.execute(update(JobRecord).where(
                    JobRecord.id == job_id, JobRecord.runner == runner,
                    JobRecord.status == RUNNING).values(status=QUEUED, lease_until=None))
            requeued += _count(done)
        return requeued

    def release(self, runner: str) -> int:
        """Queue again the jobs ``runner`` holds (it is stopping): the next runner resumes
        them at once, not when their lease runs out."""
        with self._session.begin() as session:
            done = session.execute(update(JobRecord).where(
                JobRecord.runner == runner, JobRecord.status == RUNNING).values(
                    status=QUEUED, lease_until=None))
            return _count(done)

    def renew(self, job_id: str, runner: str, lease_s: float,
              progress: float | None = None) -> bool:
        """Renew the lease (and record progress); False if the job is no longer this
        runner's to run (cancelled, or its lease taken over)."""
        values: dict[str, Any] = {"lease_until": time.time() + lease_s}
        if progress is not None:  # never backwards, also when a job is run again
            values["progress"] = case((JobRecord.progress < progress, progress),
                                      else_=JobRecord.progress)
        with self._session.begin() as session:
            done = session.execute(update(JobRecord).where(
                JobRecord.id == job_id, JobRecord.runner == runner,
                JobRecord.status == RUNNING).values(**values))
            return _count(done) == 1

    def finish(self, job_id: str, runner: str, status: str, error: str | None = None,
               disk_bytes: int | None = None) -> bool:
        """End a running job this runner holds; False if it no longer holds it."""
        values: dict[str, Any] = {"status": status, "error": error,
                                  "finished_at": time.time(), "lease_until": None}
        if status == SUCCEEDED:
            values["progress"] = 1.0
        if disk_bytes is not None:
            values["disk_bytes"] = disk_bytes
        with self._session.begin() as session:
            done = session.execute(update(JobRecord).where(
                JobRecord.id == job_id, JobRecord.runner == runner,
                JobRecord.status == RUNNING).values(**values))
            return _count(done) == 1

    def cancel(self, job_id: str, owner: str | None) -> JobRecord | None:
        """Cancel a queued or running job and delete its files; a job that had ended is
        deleted with its files. The job as it was left, or None if it is not the owner's."""
        record = self.get(job_id, owner)
        if record is None:
            return None
        with self._session.begin() as session:
            if record.status in ENDED:
                session.execute(delete(JobRecord).where(JobRecord.id == job_id))
            else:
                session.execute(update(JobRecord).where(
                    JobRecord.id == job_id, JobRecord.status.in_((QUEUED, RUNNING))).values(
                        status=CANCELLED, finished_at=time.time(), disk_bytes=0,
                        lease_until=None))
        self.remove_files(job_id)
        return self.get(job_id) or record

    def expire(self, retention_s: float) -> list[str]:
        """Delete jobs that ended more than ``retention_s`` ago, with their files."""
        cutoff = time.time() - retention_s
        old = (JobRecord.status.in_(ENDED), JobRecord.finished_at < cutoff)
        with self._session() as session:
            ids = list(session.scalars(select(JobRecord.id).where(*old)))
        if ids:
            with self._session.begin() as session:
                session.execute(delete(JobRecord).where(JobRecord.id.in_(ids), *old))
        for job_id in ids:
            self.remove_files(job_id)
        return ids

    # ------------------------------------------------------------------ figures

    def disk_used(self) -> int:
        """Bytes the jobs hold or will hold (results estimated until written)."""
        with self._session() as session:
            return int(session.scalar(select(func.coalesce(func.sum(JobRecord.disk_bytes), 0))
                                      ) or 0)

    def counts(self) -> dict[str, int]:
        with self._session() as session:
            rows = session.execute(select(JobRecord.status, func.count())
                                   .group_by(JobRecord.status)).all()
        found = {status: int(count) for status, count in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    def audio_waiting(self) -> float:
        """Seconds of audio queued or running, not yet enhanced."""
        with self._session() as session:
            value = session.scalar(select(func.coalesce(func.sum(
                JobRecord.audio_seconds * (1.0 - JobRecord.progress)), 0.0)).where(
                    JobRecord.status.in_((QUEUED, RUNNING))))
        return float(value or 0.0)


def _alive(runner: str, current: str) -> bool:
    """Whether the process named in ``runner`` (host:pid:random) still runs; a runner with
    this process's pid but not its name ran in a process that died (the pid was reused)."""
    try:
        pid = int(runner.split(":")[1])
    except (IndexError, ValueError):
        return True  # not ours to judge: its lease decides
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _count(result: Any) -> int:
    return int(result.rowcount)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers never wait for the runner's writes; a busy timeout rather than an error
    # when two front ends write at once.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
