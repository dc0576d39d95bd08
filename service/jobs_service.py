"""The jobs' part of the app's lifespan: the store, the runner, the callbacks, the metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import FastAPI

from enhancer.jobs.runner import JobRunner, RunnerOptions
from enhancer.jobs.store import JobRecord, JobStore
from enhancer.jobs.webhooks import Delivery, Webhooks
from enhancer.registry import ModelRegistry
from service.jobs_routes import job_info
from service.metrics import Metrics
from service.settings import Settings


@dataclass
class Jobs:
    store: JobStore
    runner: JobRunner
    webhooks: Webhooks

    def close(self) -> None:
        self.runner.stop()
        self.webhooks.close()
        self.store.close()


def open_jobs(settings: Settings, models: ModelRegistry, metrics: Metrics) -> Jobs:
    """The store (created if new) and a started runner, its ended jobs told to their
    callback_url and counted in the metrics."""
    store = JobStore(settings.jobs_dir, settings.JOBS_DATABASE_URL)
    webhooks = Webhooks()
    keys = settings.api_keys
    open_secret = settings.JOBS_WEBHOOK_SECRET

    def finished(job: JobRecord, seconds: float) -> None:
        metrics.job_duration.observe(seconds)
        if job.callback_url:
            secret = keys.get(job.owner) if job.owner else open_secret
            body = job_info(job).model_dump_json().encode()
            webhooks.post(Delivery(job.callback_url, body,
                                   secret.encode() if secret else None,
                                   attempts=settings.JOB_CALLBACK_ATTEMPTS))

    options = RunnerOptions(lease_s=settings.JOB_LEASE_S, retention_s=settings.JOB_RETENTION_S,
                            sweep_s=min(5.0, settings.JOB_RETENTION_S / 4),
                            max_audio_seconds=settings.JOB_MAX_AUDIO_SECONDS,
                            max_channels=settings.MAX_CHANNELS)
    runner = JobRunner(store, models.get, options, finished)
    runner.start()
    metrics.watch_jobs(store)
    return Jobs(store, runner, webhooks)


async def start_jobs(app: FastAPI) -> Jobs:
    """Open the jobs for the app's lifespan; the routes find them on ``app.state``."""
    jobs = await asyncio.to_thread(open_jobs, app.state.settings, app.state.models,
                                   app.state.metrics)
    app.state.job_store, app.state.job_runner = jobs.store, jobs.runner
    return jobs
