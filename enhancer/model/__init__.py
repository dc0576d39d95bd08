"""The model: running a .tflite file (``runner``), its card (``card``), how audio becomes
frames and back (``framing``), the grid of cells and segments a job is cut into (``grid``),
and the attenuation limit (``attenuation``)."""
