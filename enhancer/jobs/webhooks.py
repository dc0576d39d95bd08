"""Webhooks: a job's JSON POSTed to its ``callback_url`` when it ends, signed, retried.

The body is signed with HMAC-SHA256 under the job's owner's secret (its API key), sent as
``X-Enhancer-Signature: sha256=<hex>``, so the receiver can check who sent it. A failed
delivery (no answer, or a status other than 2xx) is retried after 1, 2, 4... seconds, at most
``attempts`` times in all. Deliveries run on a thread of their own each, never the runner's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("enhancer.jobs")

SIGNATURE_HEADER = "X-Enhancer-Signature"


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the HMAC's hex digest."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    secret: bytes | None
    attempts: int = 5
    first_delay_s: float = 1.0
    timeout_s: float = 10.0

    def send_once(self) -> bool:
        """POST the body once; True on a 2xx answer."""
        headers = {"Content-Type": "application/json", "User-Agent": "enhancer-jobs"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.body, self.secret)
        try:
            request = urllib.request.Request(self.url, self.body, headers, method="POST")
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return 200 <= answer.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.info("webhook to %s failed: %s", self.url, exc)
            return False

    def send(self, stop: threading.Event) -> bool:
        """Deliver, retrying with doubling pauses; False once every attempt failed (or the
        service stops)."""
        delay = self.first_delay_s
        for attempt in range(self.attempts):
            if self.send_once():
                return True
            if attempt + 1 < self.attempts and stop.wait(delay):
                return False
            delay *= 2
        log.warning("webhook to %s failed %d times; given up", self.url, self.attempts)
        return False


class Webhooks:
    """Deliveries in flight, each on its own thread; :meth:`close` stops their retries."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def post(self, delivery: Delivery) -> None:
        thread = threading.Thread(target=self._run, args=(delivery,), name="webhook",
                                  daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, delivery: Delivery) -> None:
        try:
            delivery.send(self._stop)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
