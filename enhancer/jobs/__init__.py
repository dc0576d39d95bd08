"""Jobs: long recordings enhanced in the background, persisted, resumed after a restart.

:mod:`enhancer.jobs.store` keeps the records (SQLAlchemy: SQLite in WAL mode by default,
PostgreSQL by URL) and the files beside them; :mod:`enhancer.jobs.runner` claims queued jobs
one at a time and enhances them block by block, as the CLI does; :mod:`enhancer.jobs.webhooks`
tells a job's ``callback_url`` when it ends. The HTTP routes are ``service.jobs_routes``.
"""
