"""moshi-desktop: talk full duplex with Kyutai's Moshi on your own machine.

Everything a person touches lives here (CLI, realtime engine, audio I/O, Qt widgets in `app.ui`);
the model itself is the `model` package, which never imports this one.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP threads sleep while they wait instead of spinning (model/cpu/threads.py): read by
# OpenMP once, when torch first starts its pool, so set before anything here imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    # pyproject.toml is the single source of truth; this reads it from the installed metadata.
    __version__: str = version("moshi-desktop")
except PackageNotFoundError:  # running from a checkout that was never `pip install`ed
    __version__ = "0+unknown"

__all__ = ["__version__"]
