"""The Ray Serve backend: ``backend`` (the client side), ``deployment`` (the model replicas
and their applications) and ``records`` (plain helpers without Ray)."""
