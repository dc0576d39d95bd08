"""The local worker pool: ``pool`` (the public ``WorkerPool`` and its collector thread),
``scheduling`` (sessions taking turns, cut into tasks), ``messaging`` (the wake-up pipe and
each worker's pipe), ``supervision`` (the workers' lives), ``records`` (the typed work
records) and ``worker_process`` (what runs in each spawned worker)."""
