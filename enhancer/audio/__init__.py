"""Audio IO: formats and budgets, decoding, encoding and resampling; nothing of the model.

``formats`` (rates, encodings, containers, :class:`~enhancer.audio.formats.Budget`),
``containers`` (header checks libsndfile does not make), ``decode``, ``encode`` and
``resample``. Each is imported on its own, so a module that only needs the formats loads no
codec.
"""
