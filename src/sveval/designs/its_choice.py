"""Which ITS model and interval a parameter file resolves to: one place for these defaults.

``model: auto`` picks quasi-Poisson for counts and GLS with AR errors for continuous measures;
``interval: auto`` picks profile-likelihood intervals at low counts. Used by the ITS design and by
the power/planning simulations, so both always agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sveval.designs.its_models import COUNT_MODELS
from sveval.errors import DataError
from sveval.spec import ITSOptions

LOW_COUNT = 5.0  # pre-period events a month below which count models switch to the low-count default


def resolve_model(options: ITSOptions, kind: str) -> str:
    """The estimator used: ``options.model``, or for ``auto`` the default of the measure's kind."""
    if options.model != "auto":
        return options.model
    return "quasipoisson" if kind in ("count", "rate") else "gls_ar"


def resolve_inference(options: ITSOptions, model: str, design,
                      y: np.ndarray | None = None) -> tuple[int, str, float | None]:
    """AR order and interval type actually used, and the pre-period mean count (count models).

    The count default depends on how many events there are (benchmark cells ``pois30_ar`` and
    ``negbin`` against ``low05``). With a pre-period mean of at least ``LOW_COUNT`` events a month
    the AR(1)-aware quasi-Poisson with Wald intervals; below it the residual autocorrelation cannot
    be estimated usefully and the log-likelihood is far from quadratic, so ``model: auto`` uses
    quasi-Poisson without AR terms and profile-likelihood intervals. An ``ar_order`` or
    ``interval`` set in the parameter file always wins. ``y`` replaces the design's outcome
    (simulation studies reuse one design).
    """
    ar_order = options.ar_order
    if model not in COUNT_MODELS:
        if options.interval == "profile":
            raise DataError(f"interval 'profile' is for count models; model '{model}' uses Wald intervals")
        return ar_order, "wald", None
    f = design.frame
    pre = (~f["post"].to_numpy(bool)) & design.included & (f["group"] == "treated").to_numpy()
    yy = f["y"].to_numpy(float) if y is None else np.asarray(y, float)
    mean_pre = float(np.mean(yy[pre])) if pre.any() else float("nan")
    low = bool(np.isfinite(mean_pre) and mean_pre < LOW_COUNT)
    ar_set = "ar_order" in options.model_fields_set
    if model == "quasipoisson" and not ar_set and (
            options.interval == "profile" or (low and options.model == "auto")):
        ar_order = 0
    profile_ok = model == "poisson" or (model == "quasipoisson" and ar_order == 0)
    if options.interval == "profile":
        if not profile_ok:
            raise DataError(f"interval 'profile' needs model poisson, or quasipoisson with ar_order 0; got "
                            f"model '{model}' with ar_order {ar_order}")
        return ar_order, "profile", mean_pre
    if options.interval == "auto" and low and profile_ok:
        return ar_order, "profile", mean_pre
    return ar_order, "wald", mean_pre


def outcome_scale(kind: str, model: str, data: pd.DataFrame) -> str:
    if model in COUNT_MODELS:
        return "count"
    if kind == "rate":
        pop = pd.to_numeric(data.get("population"), errors="coerce") if "population" in data else None
        if pop is not None and bool(np.all(np.isfinite(pop) & (pop > 0))):
            return "rate_per_100k"
    return "count"
