"""The local worker pool: ``pool`` (the collector and scheduler), ``records`` (its typed work
records) and ``worker_process`` (what runs in each spawned worker)."""
