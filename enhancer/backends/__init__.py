"""Where segments run: ``base`` (the interface and the session record), ``inline`` (this
process), ``pool`` (worker processes on this machine) and ``ray`` (Ray Serve replicas)."""
