"""Value for money: offences prevented times the Home Office unit costs of crime, against cost.

Configuration:

* ``parameters/costs_of_crime.yaml``: unit cost per offence category with its source and price
  year (Home Office Research Report 99, 2015/16 prices);
* ``parameters/deflators.yaml``: a GDP deflator index by financial year (HM Treasury), used to
  uprate both the unit costs and the intervention's cost to the reporting year's prices.

A measure maps to a cost category through ``cost_category`` in ``measures.yaml``; an
intervention's cost (and its price year) comes from ``interventions.yaml``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from sveval.errors import SpecError
from sveval.periods import financial_year
from sveval.spec import (
    InterventionSpec,
    MeasureSpec,
    StrictModel,
    load_model,
    parse_financial_year,
)

_Strict = StrictModel


_fy = parse_financial_year


class CostCategory(_Strict):
    name: str
    unit_cost_gbp: float = Field(gt=0)
    confirmed: bool = True
    note: str = ""


class CostsOfCrime(_Strict):
    """``parameters/costs_of_crime.yaml``."""

    source: str
    price_year: str
    note: str = ""
    categories: dict[str, CostCategory]

    _py = field_validator("price_year")(lambda cls, v: _fy(v))


class Deflators(_Strict):
    """``parameters/deflators.yaml``: GDP deflator index by financial year."""

    source: str
    release: str
    base_year: str
    illustrative: bool = False
    note: str = ""
    index: dict[str, float]

    @field_validator("index")
    @classmethod
    def _idx(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            _fy(k)
            if not x > 0:
                raise ValueError(f"deflator for {k} must be positive, got {x}")
        return v

    def factor(self, from_year: str, to_year: str) -> float:
        """Multiply a cost in ``from_year`` prices by this to express it in ``to_year`` prices."""
        missing = [y for y in (from_year, to_year) if y not in self.index]
        if missing:
            raise KeyError(
                f"no GDP deflator for {', '.join(missing)}; the table covers "
                f"{min(self.index)} to {max(self.index)} (parameters/deflators.yaml)"
            )
        return self.index[to_year] / self.index[from_year]


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _load(parameters_dir: str, _stamps: tuple = ()) -> tuple[CostsOfCrime, Deflators]:
    p = Path(parameters_dir)
    costs = load_model(CostsOfCrime, p / "costs_of_crime.yaml")
    defl = load_model(Deflators, p / "deflators.yaml")
    if costs.price_year not in defl.index:
        raise SpecError(
            p / "costs_of_crime.yaml",
            [("price_year", costs.price_year, "no GDP deflator for this year in deflators.yaml")],
        )
    return costs, defl


def load_tables(parameters_dir: Path | str) -> tuple[CostsOfCrime, Deflators]:
    """The costs-of-crime table and the deflator series (validated; cached per folder and per file
    modification time and size, so an edited table is read again even in a running kernel)."""
    d = Path(parameters_dir).resolve()
    return _load(str(d), (_stamp(d / "costs_of_crime.yaml"), _stamp(d / "deflators.yaml")))


def unit_cost(category: str, reporting_year: str, parameters_dir: Path | str) -> dict[str, Any]:
    """Unit cost of one offence in ``category`` at ``reporting_year`` prices, with its provenance."""
    costs, defl = load_tables(parameters_dir)
    if category not in costs.categories:
        raise KeyError(
            f"cost category '{category}' is not in costs_of_crime.yaml; have {', '.join(sorted(costs.categories))}"
        )
    cat = costs.categories[category]
    f = defl.factor(costs.price_year, reporting_year)
    return {
        "category": category,
        "name": cat.name,
        "unit_cost_gbp": cat.unit_cost_gbp * f,
        "base_unit_cost_gbp": cat.unit_cost_gbp,
        "base_price_year": costs.price_year,
        "price_year": reporting_year,
        "uprating_factor": f,
        "confirmed": cat.confirmed,
        "source": costs.source.strip(),
    }


#: the reason given when the headline effect is unclear (its interval includes no change)
EFFECT_UNCLEAR = "not assessed: effect unclear"

_NO_CHANGE = {"rate_ratio": 1.0, "difference": 0.0, "percent_change": 0.0}


def effect_unclear(record: dict[str, Any]) -> bool:
    """True when the headline effect's interval includes no change (or has no interval).

    An open bound (``null`` in the JSON: a profile-likelihood interval the data leave open) counts
    as unbounded on that side.
    """
    effects = record.get("effects") or []
    if not effects or not isinstance(effects[0], dict):
        return False
    e = effects[0]
    null = _NO_CHANGE.get(str(e.get("scale")), 0.0)
    if e.get("estimate") is None:
        return True
    lo = -float("inf") if e.get("ci_low") is None else float(e["ci_low"])
    hi = float("inf") if e.get("ci_high") is None else float(e["ci_high"])
    return bool(lo <= null <= hi) or lo != lo or hi != hi


def assess_with_reason(
    record: dict[str, Any],
    intervention: InterventionSpec,
    measure: MeasureSpec,
    *,
    reporting_year: str | None = None,
    parameters_dir: Path,
) -> tuple[dict[str, Any] | None, str | None]:
    """Like :func:`assess`, returning ``(value, None)`` or ``(None, reason)``.

    Value for money is assessed only where it means something: when the headline effect's
    interval includes no change the reason is :data:`EFFECT_UNCLEAR` (a benefit-cost ratio of an
    effect that may be nil, or harmful, would be read as a finding).
    """
    if effect_unclear(record):
        return None, (f"{EFFECT_UNCLEAR} (the 95% confidence interval of the headline effect "
                      "includes no change, so no benefit can be claimed)")
    prevented = record.get("prevented")
    if not isinstance(prevented, dict) or prevented.get("estimate") is None:
        return None, "the evaluation gives no estimate of offences prevented"
    if measure.cost_category is None:
        return None, f"the measure '{measure.id}' has no cost category (it is not an offence with a Home Office unit cost)"
    costs, defl = load_tables(parameters_dir)
    if measure.cost_category not in costs.categories:
        return None, (f"the measure's cost category '{measure.cost_category}' is not in costs_of_crime.yaml "
                      f"(have {', '.join(sorted(costs.categories))})")
    if reporting_year is None:
        end = (record.get("period") or {}).get("end") or prevented.get("period_end")
        reporting_year = financial_year(end) if end else max(defl.index)
        if reporting_year not in defl.index:
            reporting_year = max(defl.index)
    else:
        reporting_year = _fy(reporting_year)
    if reporting_year not in defl.index:
        return None, f"no GDP deflator for the reporting year {reporting_year} in deflators.yaml"
    uc = unit_cost(measure.cost_category, reporting_year, parameters_dir)
    caveats = [
        f"Unit cost: {uc['name'].lower()}, {uc['base_unit_cost_gbp']:,.0f} pounds per offence in "
        f"{uc['base_price_year']} prices (Home Office Research Report 99), uprated by {uc['uprating_factor']:.3f} "
        f"to {reporting_year} prices with GDP deflators. It is an average social cost, not a cashable saving.",
    ]
    if not uc["confirmed"]:
        caveats.append(f"The unit cost for {uc['name'].lower()} is unconfirmed against the primary source.")
    if defl.illustrative:
        caveats.append("The GDP deflator series in parameters/deflators.yaml is illustrative; replace it with the latest HM Treasury release.")
    if measure.source in ("hospital", "youth_justice"):
        caveats.append(f"Each prevented event of '{measure.name}' is costed as one {uc['name'].lower()} offence; the measure is not a count of recorded offences, so the mapping is approximate.")
    est = float(prevented["estimate"])
    lo = float(prevented.get("ci_low") if prevented.get("ci_low") is not None else est)
    hi = float(prevented.get("ci_high") if prevented.get("ci_high") is not None else est)
    if est < 0:
        caveats.append("More events happened than expected without the intervention, so the estimated benefit is negative.")
    if lo <= 0 <= hi:
        caveats.append("The interval of events prevented includes zero: the benefit may be nil.")
    months = prevented.get("months")
    caveats.append(
        "Benefits count only this measure over the evaluation's post period"
        + (f" ({months} months)" if months else "")
        + "; effects on other outcomes and after the period are not counted."
    )
    others = [m for m in intervention.measures if m != measure.id]
    if others:
        caveats.append(f"The intervention's whole cost is set against this measure alone; benefits on its other measures ({', '.join(others)}) are not added.")
    u = uc["unit_cost_gbp"]
    benefit, b_lo, b_hi = est * u, lo * u, hi * u
    cost = None
    if intervention.cost_gbp is None:
        caveats.append("No cost is recorded for the intervention, so no net value or benefit-cost ratio is given.")
    else:
        cpy = intervention.cost_price_year
        if cpy is None:
            cost = float(intervention.cost_gbp)
            caveats.append(f"The intervention's cost has no price year; it is taken as {reporting_year} prices.")
        else:
            try:
                cost = float(intervention.cost_gbp) * defl.factor(_fy(cpy), reporting_year)
            except (KeyError, ValueError) as exc:
                return None, f"the intervention's cost cannot be uprated: {exc}"
    bcr = bcr_lo = bcr_hi = net = None
    if cost is not None:
        net = benefit - cost
        if cost > 0:
            bcr, bcr_lo, bcr_hi = benefit / cost, b_lo / cost, b_hi / cost
    return {
        "benefit_gbp": benefit,
        "benefit_ci_low": b_lo,
        "benefit_ci_high": b_hi,
        "cost_gbp": cost,
        "net_gbp": net,
        "bcr": bcr,
        "bcr_ci_low": bcr_lo,
        "bcr_ci_high": bcr_hi,
        "prevented": est,
        "prevented_ci_low": lo,
        "prevented_ci_high": hi,
        "price_year": reporting_year,
        "unit_cost_gbp": u,
        "cost_category": measure.cost_category,
        "source": uc["source"],
        "deflator_release": defl.release,
        "caveats": caveats,
    }, None


def assess(
    record: dict[str, Any],
    intervention: InterventionSpec,
    measure: MeasureSpec,
    *,
    reporting_year: str | None = None,
    parameters_dir: Path,
) -> dict[str, Any] | None:
    """Value for money of one evaluation.

    Parameters
    ----------
    record : result JSON (uses ``prevented`` {estimate, ci_low, ci_high, months} and ``period``)
    intervention : from the interventions registry (``cost_gbp``, ``cost_price_year``)
    measure : the evaluated measure (``cost_category``)
    reporting_year : financial year of the prices (``2025/26``); default the year the evaluation
        period ends in
    parameters_dir : folder holding ``costs_of_crime.yaml`` and ``deflators.yaml``

    Returns
    -------
    dict with ``benefit_gbp, benefit_ci_low, benefit_ci_high, cost_gbp, net_gbp, bcr, bcr_ci_low,
    bcr_ci_high, price_year, unit_cost_gbp, source, caveats`` (and the prevented counts), or
    ``None`` when value for money cannot be computed; :func:`assess_with_reason` gives the reason.
    """
    value, _ = assess_with_reason(
        record, intervention, measure, reporting_year=reporting_year, parameters_dir=parameters_dir
    )
    return value
