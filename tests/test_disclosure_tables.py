"""Reconstruction attacks on published TABLES: suppressed hospital counts from combinations.

An outsider collects every number published about a protected (hospital) measure, in every output
a reader can get: the tracking tables (monthly counts and rolling 12-month totals with their rates
and populations, financial years and the baseline year with rates), the SPC chart's plotted values
and centre lines, and the Home Office returns of every quarter of a year and of the full year
(this quarter's and last quarter's return), for the under-25 split and all ages, the areas, the
partnership and the pooled comparison areas.

The attacker sets up one linear system over the unknown monthly counts (one per measure, area and
month; the partnership is the sum of its areas; an under-25 count is at most its all-ages count):

* a published count ``v`` of a class rounded to 5 says the true integer sum lies in
  ``[v - 2, v + 2]`` (round half up to 5: ``[v - 2.5, v + 2.5)``), ``0`` says it is 0, a number of
  an unrounded class is exact;
* a ``*`` that hides a small count (1-7) says the sum lies in ``[1, 7]`` (the attacker is told which
  ``*`` are small counts and which protect another cell: stronger than a real reader);
* a published rate is turned back into a count with the published population; if that count is
  not a multiple of 5 it is taken as exact (a rate computed from the raw count would leak it);
* the SPC chart's centre line (the mean of a segment) gives the exact sum of the segment.

For every suppressed small count, linear programming (:func:`scipy.optimize.linprog`, HiGHS) finds
its smallest and largest feasible value. The attack succeeds when that interval is narrower than
the suppression range 1-7. Each attack is first shown to succeed on a deliberately unprotected
variant (exact totals published beside suppressed parts), and the true counts are checked to satisfy
every constraint (so the model says what the code publishes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_project, small_counts_copy
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from sveval.periods import fy_months, quarter_months
from sveval.pipeline.disclosure import DisclosureRules, SourceRule, load_rules
from sveval.pipeline.tracking import track
from sveval.publish.returns import build_returns
from sveval.spec import add_months

MEASURES = ["knife_admissions", "knife_admissions_u25"]
YEAR = "2025/26"


# ------------------------------------------------------------------------------------------------
# The attacker
# ------------------------------------------------------------------------------------------------
@dataclass
class Attack:
    """Linear reconstruction: unknown monthly counts, published cells as interval constraints."""

    index: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rows: list[tuple[list[int], list[float], float, float, str]] = field(default_factory=list)
    targets: dict[str, list[int]] = field(default_factory=dict)
    truth: dict[int, float] = field(default_factory=dict)

    def atoms(self, measure: str, units: list[str], months: list[str]) -> list[int]:
        out = []
        for u in units:
            for p in months:
                key = (measure, u, p)
                if key not in self.index:
                    self.index[key] = len(self.index)
                out.append(self.index[key])
        return out

    def add(self, atoms: list[int], lo: float, hi: float, label: str,
            coefs: list[float] | None = None) -> None:
        self.rows.append((atoms, coefs or [1.0] * len(atoms), lo, hi, label))

    def cell(self, atoms: list[int], shown, *, round_to: int, primary: bool | None, label: str) -> None:
        """One published count: a number (rounded or exact), ``*`` or blank (withheld: no
        constraint, but a small count there is a target too, since a reader knows blanks are
        small)."""
        if shown is None or (isinstance(shown, float) and np.isnan(shown)) or shown == "":
            if primary:
                self.targets[label] = atoms
            return
        if str(shown).strip() == "*":
            if primary:
                self.add(atoms, 1, 7, label)
                self.targets[label] = atoms
            return
        v = float(shown)
        if v == 0 or round_to == 1:
            self.add(atoms, v, v, label)
        else:  # round half up: v - r/2 <= x < v + r/2, x a whole number
            self.add(atoms, np.ceil(v - round_to / 2), np.ceil(v + round_to / 2) - 1, label)

    def implied(self, atoms: list[int], count: float, label: str, round_to: int) -> None:
        """A count implied by a rate and a population: exact unless a multiple of ``round_to``."""
        if not np.isfinite(count):
            return
        near = round(count)
        assert abs(count - near) < 0.01, f"{label}: rate x population is not a whole count ({count})"
        self.cell(atoms, near, round_to=round_to if near % round_to == 0 else 1, primary=None,
                  label=label)

    def feasible_truth(self) -> list[str]:
        """Constraints the true counts break (the model is wrong about what is published)."""
        bad = []
        for atoms, coefs, lo, hi, label in self.rows:
            s = sum(c * self.truth[a] for a, c in zip(atoms, coefs, strict=True))
            if not lo - 1e-6 <= s <= hi + 1e-6:
                bad.append(f"{label}: true {s:g} not in [{lo:g}, {hi:g}]")
        return bad

    def run(self, limit: int | None = None) -> dict[str, tuple[float, float]]:
        """Feasible interval of every target (suppressed small count), by linear programming on
        each connected part of the system (cells linked by shared unknowns)."""
        from scipy.sparse.csgraph import connected_components

        n = len(self.index)
        rows = [(a, c, lo, hi) for a, c, lo, hi, _ in self.rows]
        link = [(a[0], x) for a, *_ in rows for x in a[1:]]
        link += [(a[0], x) for a in self.targets.values() for x in a[1:]]  # blank targets
        adj = csr_matrix((np.ones(len(link)), ([i for i, _ in link], [j for _, j in link])), shape=(n, n))
        _, comp = connected_components(adj, directed=False)
        out = {}
        cache: dict[int, tuple] = {}
        for label, atoms in list(self.targets.items())[:limit]:
            k = int(comp[atoms[0]])
            if k not in cache:
                members = np.flatnonzero(comp == k)
                pos = {int(a): i for i, a in enumerate(members)}
                data, ri, ci, b_ub = [], [], [], []
                r = 0
                for a, c, lo, hi in rows:
                    if int(comp[a[0]]) != k:
                        continue
                    for sign, bound in ((1.0, hi), (-1.0, -lo)):
                        if np.isfinite(bound):
                            data += [sign * x for x in c]
                            ri += [r] * len(a)
                            ci += [pos[x] for x in a]
                            b_ub.append(bound)
                            r += 1
                cache[k] = (pos, csr_matrix((data, (ri, ci)), shape=(r, len(members))), np.array(b_ub))
            pos, a_ub, b = cache[k]
            c = np.zeros(a_ub.shape[1])
            c[[pos[a] for a in atoms]] = 1.0
            lo = linprog(c, A_ub=a_ub, b_ub=b, bounds=(0, None), method="highs")
            hi = linprog(-c, A_ub=a_ub, b_ub=b, bounds=(0, None), method="highs")
            assert lo.status == 0 and hi.status in (0, 3), f"{label}: LP failed ({lo.message} / {hi.message})"
            out[label] = (lo.fun, np.inf if hi.status == 3 else -hi.fun)
        return out


def breaches(intervals: dict[str, tuple[float, float]], width: float = 6.0) -> dict[str, tuple]:
    """Targets whose feasible interval is narrower than the suppression range 1-7."""
    return {k: (round(a, 3), round(b, 3)) for k, (a, b) in intervals.items() if b - a < width - 1e-6}


def pinned(intervals: dict[str, tuple[float, float]]) -> dict[str, tuple]:
    return {k: v for k, v in breaches(intervals).items() if v[1] - v[0] < 1 - 1e-6}


# ------------------------------------------------------------------------------------------------
# What is published, read back as a reader would
# ------------------------------------------------------------------------------------------------
def _months_back(period: str, n: int) -> list[str]:
    return [add_months(period, -k) for k in range(n - 1, -1, -1)]


def _window(label: str) -> list[str]:
    """Months of a returns period label (``2025/26`` or ``2025/26 Q1``)."""
    fy, _, q = str(label).partition(" Q")
    return quarter_months(fy, int(q)) if q else fy_months(fy)


class Reader:
    """Builds the attack from the published files of one dataset."""

    def __init__(self, truth: pd.DataFrame, areas: list[str], rules: DisclosureRules,
                 measures: list[str], parents: dict[str, str]):
        self.attack = Attack()
        self.areas = areas
        self.rules = rules
        self.measures = measures
        self.truth = truth.set_index(["measure", "area_code", "period"])["count"]
        self.pop = truth.set_index(["measure", "area_code", "period"])["population"]
        for m in measures:
            for u in [*areas, "COMPARISON"]:
                months = sorted(truth.loc[(truth["measure"] == m) & (truth["area_code"] == u), "period"])
                idx = self.attack.atoms(m, [u], months)
                for i, p in zip(idx, months, strict=True):
                    self.attack.truth[i] = float(self.truth[(m, u, p)])
                par = parents.get(m)
                if par in measures:  # an under-25 count is at most its all-ages count
                    for p in months:
                        a, b = self.attack.atoms(m, [u], [p])[0], self.attack.atoms(par, [u], [p])[0]
                        self.attack.add([a, b], -np.inf, 0, f"{m}<={par} {u} {p}", [1.0, -1.0])

    def units(self, row) -> list[str]:
        t = str(row["area_type"])
        return self.areas if t == "partnership" else ["COMPARISON"] if t == "comparison" else [str(row["area_code"])]

    def true_sum(self, measure: str, units: list[str], months: list[str]) -> float:
        return float(sum(self.truth[(measure, u, p)] for u in units for p in months))

    def count(self, row, col: str, months: list[str], where: str) -> list[int]:
        m, units = str(row["measure"]), self.units(row)
        atoms = self.attack.atoms(m, units, months)
        rule = self.rules.rule(str(row["disclosure"]))
        t = self.true_sum(m, units, months)
        label = f"{where} {m} {row['area_code']} {months[0]}..{months[-1]} {col}"
        self.attack.cell(atoms, row[col], round_to=rule.round_to, primary=rule.suppresses(t), label=label)
        return atoms

    def rate(self, row, col: str, atoms: list[int], person_years: float, where: str) -> None:
        v = pd.to_numeric(row[col], errors="coerce")
        if not np.isfinite(v):
            return
        rule = self.rules.rule(str(row["disclosure"]))
        self.attack.implied(atoms, v * person_years / float(row["rate_per"]), f"{where} {col}", rule.round_to)

    def population(self, row, months: list[str]) -> float:
        m, units = str(row["measure"]), self.units(row)
        return float(np.mean([sum(self.pop[(m, u, p)] for u in units) for p in months]))

    # -- tracking ---------------------------------------------------------------------------------
    def tracking_monthly(self, df: pd.DataFrame) -> None:
        for _, r in df[df["measure"].isin(self.measures)].iterrows():
            where = f"tracking monthly {r['period']}"
            atoms = self.count(r, "count", [r["period"]], where)
            self.rate(r, "rate", atoms, float(r["population"]), where)
            months = _months_back(r["period"], 12)
            if all((r["measure"], self.units(r)[0], p) in self.truth.index for p in months):
                atoms = self.count(r, "rolling_12m", months, where)
                self.rate(r, "rolling_12m_rate", atoms, self.population(r, months), where)

    def tracking_annual(self, df: pd.DataFrame) -> None:
        for _, r in df[df["measure"].isin(self.measures)].iterrows():
            months = fy_months(r["financial_year"])
            where = f"tracking annual {r['financial_year']}"
            atoms = self.count(r, "fy_count", months, where)
            self.rate(r, "rate", atoms, float(r["exposure"]), where)

    def spc(self, df: pd.DataFrame) -> None:
        for m, g in df[df["measure"].isin(self.measures)].groupby("measure"):
            row = {"measure": m, "area_type": "partnership", "area_code": "partnership",
                   "disclosure": "hospital"}
            span = 3 if (g["aggregation"] == "quarter").all() else 1
            seg_atoms: dict[int, list[int]] = {}
            for _, r in g.iterrows():
                months = [r["period"]] if span == 1 else _months_back(add_months(r["period"], 2), 3)
                atoms = self.count({**row, "shown": r["shown"]}, "shown", months, "spc")
                seg_atoms.setdefault(int(r["segment"]), []).extend(atoms)
            for seg, gg in g.groupby("segment"):  # the centre line: the segment's mean
                total = float(gg["mean"].iloc[0]) * len(gg)
                shown = pd.to_numeric(gg["shown"], errors="coerce").fillna(4.0).sum()
                if abs(total - shown) > 1e-6:  # not drawn from the published points: the raw total
                    self.attack.add(seg_atoms[int(seg)], total - 1e-6, total + 1e-6, f"spc {m} mean {seg}")

    # -- returns ----------------------------------------------------------------------------------
    def returns(self, df: pd.DataFrame, tag: str) -> None:
        for _, r in df[df["measure"].isin(self.measures)].iterrows():
            for lab, cnt, rate in ((r["period"], "fy_count", "rate"),
                                   (r["baseline_period"], "baseline_count", "baseline_rate")):
                months = _window(lab)
                where = f"return {tag} {lab}"
                atoms = self.count(r, cnt, months, where)
                self.rate(r, rate, atoms, self.population(r, months) * len(months) / 12, where)


# ------------------------------------------------------------------------------------------------
# Datasets and publications
# ------------------------------------------------------------------------------------------------


def _project(tmp: Path, data: Path) -> Path:
    root = make_project(tmp / "project", data)
    spec = root / "parameters" / "tracking" / "partnership.yaml"
    doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
    doc["measures"] = MEASURES  # the protected measures only (keeps the test fast)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return root


def publish_all(root: Path, out: Path, rules: DisclosureRules | None = None,
                returns: bool = True) -> tuple[Reader, dict[str, Path]]:
    """Publish the tracking tables and the returns of YEAR (Q3, Q4 and the year); read them back."""
    tr = track(root / "parameters" / "tracking" / "partnership.yaml", root=root)
    rules = rules or load_rules(root / "parameters")
    files = tr.save(out / "tracking", rules)
    truth = tr.monthly[tr.monthly["area_type"].isin(["area", "comparison"])]
    parents = {m.id: m.parent for m in tr.measures if m.parent}
    reader = Reader(truth, list(tr.catalog.partnership_areas), rules, MEASURES, parents)
    reader.tracking_monthly(pd.read_csv(files["monthly"], dtype={"count": str, "rolling_12m": str}))
    reader.tracking_annual(pd.read_csv(files["annual"], dtype={"fy_count": str}))
    # the SPC points and lines as the site and the notebook draw them
    spc = pd.concat([tr.published_chart(m, rules).assign(measure=m) for m in MEASURES])
    files = {**files, "spc": out / "tracking" / "spc-published.csv"}
    spc.to_csv(files["spc"], index=False)
    reader.spc(pd.read_csv(files["spc"], dtype={"shown": str}))
    if returns:
        for q in (3, 4, None):  # this quarter's, last quarter's and the year's
            tag = f"Q{q}" if q else "year"
            rep = build_returns(root, year=YEAR, quarter=q, out_dir=out / f"returns-{tag}")
            for path in rep.csvs.values():
                df = pd.read_csv(path, dtype=str)
                if "fy_count" in df.columns:
                    reader.returns(df, tag)
    return reader, files


# ------------------------------------------------------------------------------------------------
# The attacker is validated first: it must succeed where nothing protects the cells
# ------------------------------------------------------------------------------------------------
def test_attacker_pins_a_small_year_from_its_rounded_total():
    """Four suppressed months of 1 and one month of 8 (published 10) in a year of 12 (published 10):
    each suppressed month can only be 1. The attacker finds it from the controlled cells."""
    from sveval.pipeline.disclosure import apply_to_frame

    rules = DisclosureRules(source="t", rules={
        "hospital": SourceRule(suppress_min=1, suppress_max=7, round_to=5, secondary=True),
        "police": SourceRule(), "none": SourceRule(exempt=True)})
    months = [1, 1, 1, 1, 8, 0, 0, 0, 0, 0, 0, 0]
    shown = apply_to_frame(pd.DataFrame({"count": [*months, sum(months)]}), "hospital", rules)["count"]
    assert list(shown[:5]) == ["*", "*", "*", "*", 10] and shown.iloc[-1] == 10
    attack = Attack()
    atoms = attack.atoms("m", ["a"], [f"2025-{k:02d}" for k in range(1, 13)])
    for a, v, s in zip(atoms, months, shown[:12], strict=True):
        attack.truth[a] = v
        attack.cell([a], s, round_to=5, primary=1 <= v <= 7, label=f"month {a}")
    attack.cell(atoms, shown.iloc[-1], round_to=5, primary=False, label="year")
    assert attack.feasible_truth() == []
    assert pinned(attack.run()) == {f"month {a}": (1.0, 1.0) for a in atoms[:4]}


@pytest.fixture(scope="module")
def example_project(tmp_path_factory, example_data):
    return _project(tmp_path_factory.mktemp("tables-example"), example_data)


def test_attacker_pins_cells_when_exact_totals_are_published(example_project, tmp_path):
    """An unprotected variant: counts 1-7 suppressed, but totals (areas, years) published exactly
    and no secondary suppression. The attacker must pin suppressed months there."""
    weak = DisclosureRules(source="t", rules={
        "hospital": SourceRule(suppress_min=1, suppress_max=7, round_to=1, secondary=False),
        "police": SourceRule(), "none": SourceRule(exempt=True)})
    reader, _ = publish_all(example_project, tmp_path, rules=weak, returns=False)
    assert reader.attack.feasible_truth() == []
    got = reader.attack.run(limit=60)
    assert len(pinned(got)) >= 5, f"only {len(pinned(got))} of {len(got)} pinned"
    assert len(breaches(got)) >= 30
    for label, (lo, hi) in pinned(got).items():
        true = sum(reader.attack.truth[a] for a in reader.attack.targets[label])
        assert lo - 1e-6 <= true <= hi + 1e-6


# ------------------------------------------------------------------------------------------------
# The attacks on what is published
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["example", "small_counts"])
def attacked(request, tmp_path_factory, example_data, example_project):
    tmp = tmp_path_factory.mktemp(f"tables-{request.param}")
    root = example_project if request.param == "example" else _project(
        tmp, small_counts_copy(example_data, tmp / "data-small"))
    reader, files = publish_all(root, tmp / "out")
    return reader, files, reader.attack.run()


def test_model_says_what_is_published(attacked):
    """The true counts satisfy every constraint the attacker read from the published files."""
    reader, _, _ = attacked
    assert reader.attack.feasible_truth() == []
    assert len(reader.attack.targets) > 50


def test_no_suppressed_count_is_pinned(attacked):
    """No combination of published tables fixes a suppressed count to one value."""
    _, _, intervals = attacked
    assert pinned(intervals) == {}


def test_overlapping_windows_and_chart_lines_carry_no_raw_totals(attacked):
    """Rolling 12-month totals of a protected measure are not published, and the SPC centre lines
    are drawn from the published points (otherwise a segment's exact total leaks)."""
    _, files, _ = attacked
    monthly = pd.read_csv(files["monthly"], dtype=str)
    hosp = monthly[monthly["disclosure"] == "hospital"]
    assert hosp["rolling_12m"].isna().all() and hosp["rolling_12m_rate"].isna().all()
    spc = pd.read_csv(files["spc"], dtype={"shown": str})
    for _, g in spc[spc["measure"].isin(MEASURES)].groupby(["measure", "segment"]):
        shown = pd.to_numeric(g["shown"], errors="coerce").fillna(4.0)
        assert g["mean"].iloc[0] == pytest.approx(shown.mean())


def test_no_suppressed_count_is_narrowed(attacked):
    """The strict criterion: every suppressed count can still be anything from 1 to 7 (the one
    plan of controlled cells, audited by linear programming: sveval.pipeline.disclosure.plan_cells)."""
    _, _, intervals = attacked
    assert breaches(intervals) == {}


def test_plan_protects_the_small_year():
    """The leak of test_attacker_pins_a_small_year_from_its_rounded_total, controlled by the plan:
    months, quarters and the year of one area from one set of cells; no suppressed cell narrowed,
    and the year is still published."""
    from sveval.pipeline.disclosure import plan_cells

    rules = DisclosureRules(source="t", rules={
        "hospital": SourceRule(suppress_min=1, suppress_max=7, round_to=5, secondary=True),
        "police": SourceRule(), "none": SourceRule(exempt=True)})
    periods = fy_months("2025/26")
    values = [1, 1, 1, 1, 8, 0, 0, 0, 0, 0, 0, 0]
    monthly = pd.DataFrame({"measure": "m", "disclosure": "hospital", "area_type": "partnership",
                            "area_code": "A", "period": periods, "count": values})
    plan = plan_cells(monthly, rules)
    attack = Attack()
    atoms = attack.atoms("m", ["A"], periods)
    for a, v in zip(atoms, values, strict=True):
        attack.truth[a] = v
    windows = [[p] for p in periods] + [quarter_months("2025/26", q) for q in (1, 2, 3, 4)] + [periods]
    for w in windows:
        idx = [atoms[periods.index(p)] for p in w]
        true = sum(values[periods.index(p)] for p in w)
        attack.cell(idx, plan.shown("m", "A", w), round_to=5, primary=1 <= true <= 7, label=",".join(w))
    assert attack.feasible_truth() == []
    assert attack.targets and breaches(attack.run()) == {}
    assert plan.shown("m", "A", periods) == 10
