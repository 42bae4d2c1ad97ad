"""sveval: evaluate what works against serious violence.

Interrupted time series and difference-in-differences evaluations of interventions commissioned
under the Serious Violence Duty, outcome tracking, Home Office returns and a Quarto report site.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sveval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
