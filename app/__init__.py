"""moshi-desktop: talk full duplex with Kyutai's Moshi on your own machine.

Everything a person touches lives here (CLI, realtime engine, audio I/O, Qt widgets in `app.ui`);
the model itself is the `model` package, which never imports this one.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the single source of truth; this reads it from the installed metadata.
    __version__: str = version("moshi-desktop")
except PackageNotFoundError:  # running from a checkout that was never `pip install`ed
    __version__ = "0+unknown"

__all__ = ["__version__"]
