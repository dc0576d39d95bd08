"""A client for the service's jobs (``/jobs``): long recordings enhanced in the background.

    from enhancer.apps.client import download_result, submit_job, wait_for_job

    job = submit_job("http://127.0.0.1:8080", "audio_samples/noisy_speech_16000.wav")
    job = wait_for_job("http://127.0.0.1:8080", job["id"])
    download_result("http://127.0.0.1:8080", job["id"], "enhanced.wav")

Uses only the standard library's ``urllib`` (the service's runtime needs no HTTP client).
The upload streams from the file, never whole in memory; a download that breaks resumes
with ``Range`` into ``.<name>.<id>.part`` beside the destination, renamed into place once
whole, so the destination is never half-written.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from enhancer.errors import EnhancerError

ENDED = frozenset({"succeeded", "failed", "cancelled"})
TIMEOUT_S = 60.0  # for one HTTP exchange; a job itself may take hours
CHUNK = 1 << 20
DOWNLOAD_ATTEMPTS = 5  # attempts in a row that bring no new byte before giving up


class JobError(EnhancerError):
    """A job call failed: the server refused it (``status`` and its ``detail``), could not
    be reached, or the job ended without a result."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _base(server: str) -> str:
    server = server.rstrip("/")
    return server if server.startswith(("http://", "https://")) else "http://" + server


def _open(server: str, path: str, method: str = "GET", api_key: str | None = None,
          headers: dict[str, str] | None = None, body: BinaryIO | None = None) -> Any:
    """The response to one request; :class:`JobError` with the server's ``detail`` for an
    error status, or saying the server could not be reached."""
    url = _base(server) + path
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise JobError(f"{method} {path}: {_detail(error.read(), str(error.reason))} "
                       f"(HTTP {error.code})", error.code) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise JobError(f"cannot reach {_base(server)}: {reason}") from None


def _detail(body: bytes, reason: str) -> str:
    """The ``detail`` of an error's JSON body, else its text."""
    text = body.decode(errors="replace")
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        return text.strip() or reason
    return detail if isinstance(detail, str) else json.dumps(detail)


def _json(server: str, path: str, method: str = "GET",
          api_key: str | None = None) -> dict[str, Any]:
    with _open(server, path, method, api_key) as response:
        return dict(json.load(response))


def submit_job(server: str, source: str | os.PathLike[str], *, api_key: str | None = None,
               idempotency_key: str | None = None, sample_rate: int | None = None,
               raw_format: str | None = None, model: str | None = None,
               atten_lim_db: float | None = None, callback_url: str | None = None,
               on_sent: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Upload ``source`` as a job (the raw body, streamed from the file); return the job.

    ``sample_rate`` and ``raw_format`` describe headerless samples; files with a header
    (WAV, FLAC, MP3, Ogg) carry their own. With ``idempotency_key``, a retried call returns
    the job the first one made. ``on_sent(n)`` is told each block of ``n`` bytes sent.
    """
    options = {"sample_rate": sample_rate, "format": raw_format, "model": model,
               "atten_lim_db": atten_lim_db, "callback_url": callback_url}
    query = urlencode({name: value for name, value in options.items() if value is not None})
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(os.path.getsize(source))}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    if api_key:
        headers["X-API-Key"] = api_key
    path = "/jobs" + (f"?{query}" if query else "")
    with open(source, "rb") as file:
        status, reason, body = _post_file(server, path, headers, file, on_sent)
    if status >= 400:
        raise JobError(f"POST /jobs: {_detail(body, reason)} (HTTP {status})", status)
    return dict(json.loads(body))


def _post_file(server: str, path: str, headers: dict[str, str], file: BinaryIO,
               on_sent: Callable[[int], None] | None) -> tuple[int, str, bytes]:
    """POST ``file`` a block at a time; the answer's status, reason and body, also of an
    answer given before the server took the whole body (a bad key, a full queue...)."""
    parts = urlsplit(_base(server))
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=TIMEOUT_S)
    try:
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        with suppress(BrokenPipeError, ConnectionResetError):  # answered early: read why
            while block := file.read(CHUNK):
                connection.send(block)
                if on_sent is not None:
                    on_sent(len(block))
        response = connection.getresponse()
        return response.status, response.reason, response.read()
    except (OSError, http.client.HTTPException) as error:
        raise JobError(f"cannot reach {_base(server)}: {error}") from None
    finally:
        connection.close()


def job_status(server: str, job_id: str, api_key: str | None = None) -> dict[str, Any]:
    """The job as ``GET /jobs/{id}`` shows it."""
    return _json(server, f"/jobs/{job_id}", api_key=api_key)


def cancel_job(server: str, job_id: str, api_key: str | None = None) -> dict[str, Any]:
    """Cancel a queued or running job (or delete an ended one) and its files."""
    return _json(server, f"/jobs/{job_id}", "DELETE", api_key)


def wait_for_job(server: str, job_id: str, api_key: str | None = None,
                 on_update: Callable[[dict[str, Any]], None] | None = None,
                 first_interval_s: float = 0.5, max_interval_s: float = 5.0,
                 timeout_s: float | None = None) -> dict[str, Any]:
    """The job once it has ended (whatever its status), asking every 0.5 s at first, then
    half as often again each time up to every 5 s; ``on_update`` sees each answer."""
    # The service has no push for jobs, so this polls; the interval grows because a short
    # job ends within a second or two, while a long one needs no news more than every 5 s.
    interval = first_interval_s
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = job_status(server, job_id, api_key)
        if on_update is not None:
            on_update(job)
        if job["status"] in ENDED:
            return job
        if deadline is not None and time.monotonic() + interval > deadline:
            raise JobError(f"job {job_id} is still {job['status']} after {timeout_s:g} s")
        time.sleep(interval)
        interval = min(max_interval_s, interval * 1.5)


def partial_path(destination: Path, job_id: str) -> Path:
    """Where the download of ``job_id`` to ``destination`` gathers until it is whole."""
    return destination.with_name(f".{destination.name}.{job_id}.part")


def download_result(server: str, job_id: str, destination: str | os.PathLike[str],
                    api_key: str | None = None,
                    on_received: Callable[[int, int | None], None] | None = None) -> Path:
    """Download the result of a succeeded job to ``destination``.

    A connection that breaks is resumed with ``Range`` (up to ``DOWNLOAD_ATTEMPTS`` tries in
    a row that bring nothing new), and a partial file left by an earlier call is resumed too;
    the file is renamed into place once whole. ``on_received(bytes, total)`` follows it.
    """
    destination = Path(destination)
    part = partial_path(destination, job_id)
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_into(server, job_id, part, api_key, on_received)
        except (OSError, http.client.HTTPException) as error:
            got = part.stat().st_size if part.exists() else 0
            failures = 0 if got > before else failures + 1
            if failures >= DOWNLOAD_ATTEMPTS:
                raise JobError(f"the download of job {job_id} keeps breaking ({error}); "
                               f"{got} bytes are kept in {part} to resume from") from None
            continue
        os.replace(part, destination)
        return destination


def _fetch_into(server: str, job_id: str, part: Path, api_key: str | None,
                on_received: Callable[[int, int | None], None] | None) -> int:
    """Append the rest of the result to ``part`` (from its start when the server sends the
    whole file); return the result's whole size."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(server, f"/jobs/{job_id}/result", api_key=api_key, headers=headers)
    except JobError as error:
        if error.status != 416:  # 416: the part is no prefix of this result; start again
            raise
        part.unlink()
        return _fetch_into(server, job_id, part, api_key, on_received)
    with response:
        if response.status == 206:
            total = int(response.headers["Content-Range"].rpartition("/")[2])
        else:
            have, total = 0, int(response.headers["Content-Length"])
        with open(part, "ab" if have else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                have += len(block)
                if on_received is not None:
                    on_received(have, total)
    if have < total:
        raise http.client.IncompleteRead(b"", total - have)
    if have > total:  # not this result's prefix after all: nothing of it is kept
        part.unlink()
        raise JobError(f"the download of job {job_id} grew past its {total} bytes")
    return total
