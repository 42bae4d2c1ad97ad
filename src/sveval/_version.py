"""The installed package version (imported by modules that record provenance)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sveval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
