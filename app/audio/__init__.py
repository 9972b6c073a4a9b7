"""Audio in and out: devices (PortAudio), the buffers between their callbacks and the engine,
files (read, write, resample), and file-backed or silent audio for tests and `chat --input-file`."""
