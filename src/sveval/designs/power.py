"""Power and minimum detectable effect (MDE) of an ITS evaluation, and planning before launch.

Method (both functions):

1. Fit the chosen ITS model to the **pre-period only**, without intervention terms, and
   extrapolate it over the post period: this is the expected series had nothing happened.
2. Simulate ``n_sim`` series from it with the noise seen in the pre-period: for counts, Poisson
   counts around a latent AR(1) log-normal rate whose variance reproduces the estimated
   overdispersion and whose autocorrelation is the fitted AR coefficient; for continuous
   measures, Gaussian AR(p) errors with the fitted coefficients and variance.
3. Fit the full ITS model (same options) to each simulated series and keep the level-change
   estimate, its standard error and critical value (``arima``, ``negbin`` and ``quasipoisson`` by
   the fast estimators of :mod:`sveval.designs.its_refit`, as the pre-period fit of step 1).
4. Power at a proportional change ``d`` (0.2 = a 20% fall, or rise when higher is better) is the
   share of simulations whose interval lies wholly on the improving side once the level is
   shifted by ``log(1 - d)`` (counts) or by ``-d`` x the mean counterfactual level (continuous).
   The shift is exact for Gaussian models and a first-order approximation for count models.
5. The MDE is the smallest ``d`` with power >= ``target_power`` (bisection on the simulated power
   curve); the evaluation is **underpowered** when the MDE exceeds ``threshold`` (default 30%).

Sequential stopping (:func:`its_power`): the simulations are looked at after ``SEQ_FIRST`` (50)
and then every ``SEQ_EVERY`` (25) simulations, and stop once, at every reported effect size, the
exact (Clopper-Pearson) interval of the simulated power at two-sided level ``1 - SEQ_ALPHA``
(99%) lies wholly above or wholly below ``target_power``; never more than ``n_sim``. An effect size
whose true power equals the target is declared clearly above or below it at a given look with
probability at most ``SEQ_ALPHA`` (1%), so over the at most ``(n_sim - SEQ_FIRST) / SEQ_EVERY``
early looks (6 for 200 simulations) with probability at most 6%. The simulations are drawn in
the same order whether or not the rule stops, so a run that goes to ``n_sim`` equals the run
without the rule; ``Power.n_sim`` is the number used and ``Power.mc_se`` the largest Monte Carlo
standard error of the reported powers.

:func:`months_to_detect` answers the planning question "how many months after launch until a
20% drop is detectable?" from pre-period data alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.signal import lfilter

from sveval.designs.its_design import ITSDesign
from sveval.designs.its_models import COUNT_MODELS, ar_acf
from sveval.designs.its_refit import refit_many, refit_model
from sveval.errors import DataError, EstimationError, OptionError
from sveval.periods import parse_any_period
from sveval.result import Power
from sveval.spec import ITSOptions, add_months, parse_period, period_index

DEFAULT_EFFECTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class _SimBase:
    design: ITSDesign
    model: str
    ar_order: int
    mean: np.ndarray  # expected outcome without intervention, every row
    log_link: bool
    phi: float  # count overdispersion (>= 1) or Gaussian marginal variance
    ar: tuple[float, ...]
    cf_level: float  # mean counterfactual over the treated post period


def _base(data, intervention_start, options, kind, comparison, breaks) -> _SimBase:
    from sveval.designs.its_choice import outcome_scale as _outcome
    from sveval.designs.its_choice import resolve_inference, resolve_model
    from sveval.designs.its_design import build_design

    model = resolve_model(options, kind)
    design = build_design(data, intervention_start, options, comparison=comparison, breaks=breaks,
                          count_model=model in COUNT_MODELS, outcome=_outcome(kind, model, data))
    f = design.frame
    pre = (~f["post"].to_numpy(bool)) & design.included
    effect_cols = set(design.effect_columns.values()) | {
        c for c in design.columns if c.startswith(("level_", "slope_"))
    }
    keep = [i for i, c in enumerate(design.columns)
            if c not in effect_cols and np.ptp(design.X[pre, i]) + abs(design.X[pre, i]).max() > 0]
    Xp = design.X[:, keep]
    # drop columns that are constant zero or collinear in the pre-period
    rank = np.linalg.matrix_rank(Xp[pre])
    if rank < len(keep):
        sel: list[int] = []
        for j in range(len(keep)):
            if np.linalg.matrix_rank(Xp[pre][:, sel + [j]]) == len(sel) + 1:
                sel.append(j)
        keep = [keep[j] for j in sel]
        Xp = design.X[:, keep]
    names = [design.columns[i] for i in keep]
    if pre.sum() - len(keep) < 6:
        raise DataError(f"the pre-period has {int(pre.sum())} usable months for {len(keep)} terms; too "
                        "short to simulate power")
    y = f["y"].to_numpy(float)
    off = f["offset"].to_numpy(float)
    pre_fit = refit_model(model, y, Xp, off, names, f["t"].to_numpy(float), design.series_id, pre,
                          ar_order=max(options.ar_order, 1) if model not in COUNT_MODELS or options.ar_order else 0)
    mean = pre_fit.mean(Xp, off)
    log_link = pre_fit.link == "log"
    ar = tuple(pre_fit.ar)
    if not ar:
        r = np.asarray(pre_fit.resid)
        ar = (float(np.clip(np.corrcoef(r[:-1], r[1:])[0, 1], 0.0, 0.9)),) if len(r) > 3 else (0.0,)
    if log_link:
        phi = max(1.0, float(pre_fit.dispersion or 1.0), float(pre_fit.scale or 1.0))
        if pre_fit.alpha is not None:
            phi = max(phi, 1.0 + pre_fit.alpha * float(np.mean(mean[pre])))
    else:
        phi = float(np.var(pre_fit.resid, ddof=len(names)) if model != "gls_ar" else pre_fit.scale)
    tp = f["post"].to_numpy(bool) & (f["group"] == "treated").to_numpy() & design.included
    # the simulated series are refitted with the AR order the evaluation itself uses; intervals are
    # Wald (profile-likelihood intervals, the low-count default, cost too much to repeat per draw)
    ar_order, _, _ = resolve_inference(options, model, design)
    return _SimBase(design=design, model=model, ar_order=ar_order, mean=mean, log_link=log_link,
                    phi=phi, ar=ar, cf_level=float(np.mean(mean[tp])))


def _ar_noise(rng, n: int, ar: tuple[float, ...], var: float, series_id: np.ndarray) -> np.ndarray:
    """Stationary AR(p) noise with marginal variance ``var``, independent between series."""
    phi = np.asarray(ar, float)
    p = len(phi)
    rho0 = ar_acf(phi, p) if p else np.array([1.0])
    innov_var = var * (1 - float(np.dot(phi, rho0[1:p + 1]))) if p else var
    out = np.empty(n)
    for s in np.unique(series_id):
        idx = np.flatnonzero(series_id == s)
        m = len(idx)
        burn = 100
        e = rng.standard_normal(m + burn) * math.sqrt(max(innov_var, 1e-12))
        # u[i] = e[i] + sum_j phi[j] u[i - j - 1] (zero start), as one linear filter
        u = lfilter([1.0], np.r_[1.0, -phi], e) if p else e
        out[idx] = u[burn:]
    return out


def _simulate(base: _SimBase, rng) -> np.ndarray:
    d = base.design
    n = len(base.mean)
    if base.log_link:
        mu_bar = float(np.mean(base.mean))
        s2 = math.log(1.0 + (base.phi - 1.0) / max(mu_bar, 1e-9))
        u = _ar_noise(rng, n, base.ar, s2, d.series_id) if s2 > 0 else np.zeros(n)
        return rng.poisson(base.mean * np.exp(u - s2 / 2)).astype(float)
    return base.mean + _ar_noise(rng, n, base.ar, base.phi, d.series_id)


SEQ_FIRST = 50  # first look of the sequential stopping rule
SEQ_EVERY = 25  # simulations between looks
SEQ_ALPHA = 0.01  # two-sided error of the Clopper-Pearson interval at each look


def clopper_pearson(x: int, n: int, alpha: float = SEQ_ALPHA) -> tuple[float, float]:
    """Exact two-sided ``1 - alpha`` interval of a binomial proportion ``x / n``."""
    lo = 0.0 if x == 0 else float(stats.beta.ppf(alpha / 2, x, n - x + 1))
    hi = 1.0 if x == n else float(stats.beta.ppf(1 - alpha / 2, x + 1, n - x))
    return lo, hi


def _lockstep(base: _SimBase) -> bool:
    """Whether the simulated series are refitted in lockstep (AR(1) quasi-Poisson)."""
    return base.model == "quasipoisson" and base.ar_order == 1


def _batch(done: int, n_sim: int, lockstep: bool) -> int:
    """How many simulations to draw and refit after ``done``: up to the next look of the
    sequential rule, or in lockstep up to the look at twice ``done`` (a batch's fixed cost is
    spread over more series; at most about half the refits are beyond a stop)."""
    if done < SEQ_FIRST:
        end = SEQ_FIRST
    elif lockstep:
        end = SEQ_FIRST + SEQ_EVERY * math.ceil((2 * done - SEQ_FIRST) / SEQ_EVERY)
    else:
        end = done + SEQ_EVERY
    return min(end, n_sim) - done


def _refits(base: _SimBase, Y: np.ndarray, off: np.ndarray, t: np.ndarray) -> list:
    """The refit of each simulated series (rows of ``Y``), or the exception it raised, in order:
    AR(1) quasi-Poisson series in lockstep (:func:`~sveval.designs.its_refit.refit_many`, the
    same fits), every other model one by one."""
    d = base.design
    if _lockstep(base):
        return refit_many(base.model, Y, d.X, off, d.columns, t, d.series_id, d.included, ar_order=1)
    out: list = []
    for y in Y:
        try:
            out.append(refit_model(base.model, y, d.X, off, d.columns, t, d.series_id, d.included,
                                   ar_order=base.ar_order))
        except Exception as exc:  # noqa: BLE001 - handed back in order, as refit_many
            out.append(exc)
    return out


def _fit_sims(base: _SimBase, n_sim: int, seed: int, stop=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate and refit up to ``n_sim`` series; ``stop(b, se, crit)`` is asked after
    ``SEQ_FIRST`` and then every ``SEQ_EVERY`` simulations and ends the run when it says True."""
    d = base.design
    f = d.frame
    col = d.effect_columns["level_1"]
    rng = np.random.default_rng(seed)
    b, se, crit = [], [], []
    off, t = f["offset"].to_numpy(float), f["t"].to_numpy(float)
    lockstep = _lockstep(base)
    ahead: list = []  # refits of the simulations drawn so far, in order
    for done in range(n_sim):
        if (stop is not None and b and done >= SEQ_FIRST and (done - SEQ_FIRST) % SEQ_EVERY == 0
                and stop(np.array(b), np.array(se), np.array(crit))):
            break
        if done == len(ahead):
            # the next simulations, drawn in order and refitted together (the same fits as one by
            # one; any drawn beyond a stop are not used)
            m = _batch(done, n_sim, lockstep)
            ahead.extend(_refits(base, np.array([_simulate(base, rng) for _ in range(m)]), off, t))
        fit = ahead[done]
        if isinstance(fit, (EstimationError, np.linalg.LinAlgError, ValueError)):
            continue
        if isinstance(fit, BaseException):
            raise fit
        i = fit.names.index(col)
        if not np.isfinite(fit.bse[i]):
            continue
        b.append(fit.params[i])
        se.append(fit.bse[i])
        crit.append(fit.crit(i=i))
    if not b:
        raise EstimationError("no simulated series could be fitted; power cannot be estimated")
    return np.array(b), np.array(se), np.array(crit)


def _power_curve(b, se, crit, base: _SimBase, better_if: str):
    sign = -1.0 if better_if == "lower" else 1.0

    def power(d: float) -> float:
        if base.log_link:
            shift = math.log(1 - d) if sign < 0 else math.log(1 + d)
        else:
            shift = sign * d * base.cf_level
        est = b + shift
        if sign < 0:
            return float(np.mean(est + crit * se < 0))
        return float(np.mean(est - crit * se > 0))

    return power


def _mde(power, target: float) -> float | None:
    hi = 0.95
    if power(hi) < target:
        return None
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if power(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def its_power(
    data: pd.DataFrame,
    intervention_start: str,
    options: ITSOptions | None = None,
    *,
    kind: str = "count",
    better_if: str = "lower",
    comparison: pd.DataFrame | None = None,
    breaks: tuple = (),
    n_sim: int | None = None,
    seed: int = 20240601,
    effects: tuple[float, ...] = DEFAULT_EFFECTS,
    target_power: float = 0.8,
    alpha: float = 0.05,
    sequential: bool = True,
) -> Power:
    """Simulated power and MDE for the available post period (see the module docstring).

    Parameters
    ----------
    data, intervention_start, options, kind, comparison, breaks : as :func:`sveval.designs.its.fit_its`
    better_if : direction of improvement (a fall for ``lower``)
    n_sim : simulations (default ``options.power_sims``)
    effects : proportional changes at which to report power
    target_power : power that defines the MDE (0.8)
    alpha : significance level (the model's 95% intervals are used, so 0.05)
    sequential : stop early once every reported power is clearly above or below ``target_power``
        (see the module docstring); False runs all ``n_sim`` simulations

    Returns
    -------
    :class:`~sveval.result.Power` with ``mde`` (None if even a 95% change is not detectable),
    ``power_at`` (keys like ``"0.2"``), ``underpowered`` (MDE > ``options.mde_threshold``).
    """
    options = options or ITSOptions()
    if abs(alpha - 0.05) > 1e-12:
        raise OptionError("its_power uses the models' 95% intervals: alpha must be 0.05")
    n_sim = options.power_sims if n_sim is None else n_sim
    if n_sim < 20:
        raise OptionError("n_sim must be at least 20")
    if options.phase_in_months is None:
        options = options.model_copy(update={"phase_in_months": 0})
    base = _base(data, parse_any_period(intervention_start), options, kind, comparison, breaks)

    def decided(b, se, crit) -> bool:
        power = _power_curve(b, se, crit, base, better_if)
        for d in effects:
            x = int(round(power(d) * len(b)))
            lo, hi = clopper_pearson(x, len(b))
            if lo <= target_power <= hi:
                return False
        return True

    b, se, crit = _fit_sims(base, n_sim, seed, stop=decided if sequential else None)
    power = _power_curve(b, se, crit, base, better_if)
    mde = _mde(power, target_power)
    power_at = {f"{d:g}": power(d) for d in effects}
    mc_se = max(math.sqrt(p * (1 - p) / len(b)) for p in power_at.values()) if power_at else None
    underpowered = mde is None or mde > options.mde_threshold
    post = int(base.design.frame.loc[base.design.frame["group"] == "treated", "post"].sum())
    stopped = (f"; stopped early at {len(b)} of {n_sim}: every reported power clearly above or below "
               f"{target_power:.0%}") if sequential and len(b) < n_sim else ""
    return Power(
        mde=mde, target_power=target_power, alpha=alpha, post_months=post, power_at=power_at,
        n_sim=len(b), underpowered=underpowered, threshold=options.mde_threshold,
        method=f"simulated from the pre-period {base.model} fit ({len(b)} series; AR "
        f"{', '.join(f'{a:.2f}' for a in base.ar)}; "
        + (f"overdispersion {base.phi:.2f}" if base.log_link else f"error variance {base.phi:.3g}")
        + f"), level change tested with the evaluation's own model; Monte Carlo standard error of "
        f"the powers at most {mc_se:.3f}" + stopped,
        mc_se=mc_se,
    )


@dataclass(frozen=True)
class Plan:
    """Answer of :func:`months_to_detect`.

    ``months`` is the shortest post period (months after launch) at which ``effect`` is detected
    with ``power`` (None if not within ``max_months``); ``power_by_months`` the simulated power at
    the post-period lengths tried.
    """

    effect: float
    target_power: float
    months: int | None
    max_months: int
    launch: str
    power_by_months: dict[int, float] = field(default_factory=dict)
    n_sim: int = 0

    def text(self, measure_name: str = "the measure") -> str:
        if self.months is None:
            return (f"A {100 * self.effect:.0f}% change in {measure_name} would not be detectable with "
                    f"{100 * self.target_power:.0f}% power within {self.max_months} months of launch.")
        return (f"A {100 * self.effect:.0f}% change in {measure_name} becomes detectable with "
                f"{100 * self.target_power:.0f}% power about {self.months} months after launch "
                f"({add_months(self.launch, self.months - 1)}).")


def _extend(data: pd.DataFrame, launch: str, months: int) -> pd.DataFrame:
    pre = data[data["period"].astype(str) < launch].copy()
    pre["period"] = pre["period"].astype(str)
    pre = pre.sort_values("period").reset_index(drop=True)
    if pre.empty:
        raise DataError(f"no data before the launch month {launch}")
    if period_index(launch) != period_index(pre["period"].iloc[-1]) + 1:
        raise DataError(f"the pre-period data must run up to the month before launch ({add_months(launch, -1)})")
    pop = pre["population"].iloc[-1] if "population" in pre else np.nan
    future = pd.DataFrame({
        "period": [add_months(launch, i) for i in range(months)],
        "count": np.nan, "population": pop,
    })
    out = pd.concat([pre[["period", "count"] + (["population"] if "population" in pre else [])], future],
                    ignore_index=True)
    return out


def months_to_detect(
    data: pd.DataFrame,
    launch: str,
    effect: float = 0.2,
    *,
    power: float = 0.8,
    options: ITSOptions | None = None,
    kind: str = "count",
    better_if: str = "lower",
    max_months: int = 60,
    min_months: int = 6,
    n_sim: int = 200,
    seed: int = 20240601,
) -> Plan:
    """How many months after ``launch`` until a change of ``effect`` is detectable with ``power``.

    Uses only the pre-period (months before ``launch``): the model is fitted to it, future months
    are simulated from it (population held at its last value), and the power of the ITS level
    change test is found by bisection on the post-period length (power grows with it).

    Example
    -------
    ``months_to_detect(series, "2025-04", 0.2).months`` -> e.g. 18
    """
    options = options or ITSOptions()
    if options.phase_in_months is None:
        options = options.model_copy(update={"phase_in_months": 0})
    if not 0 < effect < 1:
        raise OptionError("effect is a proportional change between 0 and 1 (0.2 = 20%)")
    launch = parse_period(launch)
    cache: dict[int, float] = {}

    def power_at(m: int) -> float:
        if m not in cache:
            ext = _extend(data, launch, m)
            # placeholder outcomes for the future months: the simulation replaces them
            ext["count"] = ext["count"].fillna(ext["count"].mean()).round()
            base = _base(ext, launch, options, kind, None, ())
            b, se, crit = _fit_sims(base, n_sim, seed)
            cache[m] = _power_curve(b, se, crit, base, better_if)(effect)
        return cache[m]

    lo, hi = min_months, max_months
    if power_at(hi) < power:
        months = None
    elif power_at(lo) >= power:
        months = lo
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if power_at(mid) >= power:
                hi = mid
            else:
                lo = mid
        months = hi
    return Plan(effect=effect, target_power=power, months=months, max_months=max_months, launch=launch,
                power_by_months=dict(sorted(cache.items())), n_sim=n_sim)


def analytic_mde(se: float, target_power: float = 0.8, alpha: float = 0.05) -> float:
    """Normal-approximation MDE (proportional fall) for a log-scale standard error (a quick check)."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power)
    return 1.0 - math.exp(-z * se)
