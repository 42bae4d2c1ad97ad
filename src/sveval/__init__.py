"""sveval: evaluate what works against serious violence.

Interrupted time series and difference-in-differences evaluations of interventions commissioned
under the Serious Violence Duty, outcome tracking, Home Office returns and a Quarto report site.

The public API for evaluators working in their own notebooks::

    import sveval

    ctx = sveval.prepare("parameters/evaluations/youth-navigators-fte-its.yaml")  # validate + load
    result = sveval.fit(ctx)                      # a sveval.Result (effects, checks, power)
    record = sveval.save(ctx, result, "out.json")  # the typed, disclosure-controlled result record
    plan, measure = sveval.plan("parameters/evaluations/x.yaml", effect=0.2)

Every design also has a frame-level function (``sveval.designs.its.fit_its``,
``sveval.designs.did.fit_did``, ``sveval.designs.synth.fit_synth``) taking data and options and
returning a :class:`Result`. Errors that sveval raises on purpose are :class:`SvevalError`s.

Names are loaded on first use, so ``import sveval`` stays cheap (the CLI starts fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sveval._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from sveval.errors import SvevalError
    from sveval.pipeline.api import fit, plan, prepare, save
    from sveval.pipeline.record import ResultRecord
    from sveval.result import Result

_API = {
    "prepare": "sveval.pipeline.api",
    "fit": "sveval.pipeline.api",
    "save": "sveval.pipeline.api",
    "plan": "sveval.pipeline.api",
    "Result": "sveval.result",
    "ResultRecord": "sveval.pipeline.record",
    "SvevalError": "sveval.errors",
}

__all__ = ["__version__", "prepare", "fit", "save", "plan", "Result", "ResultRecord", "SvevalError"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sveval' has no attribute {name!r}")
