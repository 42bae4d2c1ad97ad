"""The illustrative example generator: determinism, magnitudes, truth, atomic generation."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sveval.catalog import Catalog
from sveval.data import example as ex
from sveval.data.ingest import load_example_long

PARAMS = Path(__file__).resolve().parents[1] / "parameters"
REFERENCE_DIGESTS = Path(__file__).resolve().parent / "reference" / "example" / "digests.json"
P = ["E06000047", "E06000005"]
CLEVELAND = ["E06000001", "E06000002", "E06000004"]


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory) -> Path:
    # shared by the data test modules of one session (ensure_example reuses a current dataset)
    return ex.ensure_example(tmp_path_factory.getbasetemp() / "sveval-example")


@pytest.fixture(scope="module")
def long(example_dir) -> pd.DataFrame:
    return load_example_long(example_dir, Catalog.load(PARAMS))


def _fy_total(long, measure, areas, fy_start):
    m = long[(long["measure"] == measure) & long["area_code"].isin(areas)]
    lo, hi = f"{fy_start}-04", f"{fy_start + 1}-03"
    return m[(m["period"] >= lo) & (m["period"] <= hi)]["count"].sum()


def _hash_tree(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def test_deterministic_byte_identical(example_dir, tmp_path):
    again = ex.generate(tmp_path / "again")
    a, b = _hash_tree(example_dir), _hash_tree(again)
    assert a.keys() == b.keys() and len(a) > 1000
    assert a == b
    # byte-identical to the output of the generator before it was sped up (gzip bytes and manifest
    # included): the digests were written by tests/reference/example/make_digests.py from that commit
    ref = json.loads(REFERENCE_DIGESTS.read_text(encoding="utf-8"))
    assert ref["generator_version"] == ex.GENERATOR_VERSION and ref["seed"] == ex.DEFAULT_SEED
    assert sorted(b) == sorted(ref["files"])
    # deflate output may change between zlib versions: the gzip files and the manifest (which holds
    # their digests) are compared under the zlib the reference was made with
    same_zlib = ref["zlib"] == zlib.ZLIB_RUNTIME_VERSION
    if not same_zlib:
        warnings.warn(f"zlib {zlib.ZLIB_RUNTIME_VERSION}, reference made with {ref['zlib']}: "
                      "gzip files and manifest not compared", stacklevel=1)
    checked = {k: v for k, v in ref["files"].items()
               if same_zlib or not (k.endswith(".gz") or k == "manifest.json")}
    assert len(checked) >= 10
    changed = sorted(k for k, v in checked.items() if b[k] != v)
    assert not changed, f"{len(changed)} files differ from the reference, e.g. {changed[:5]}"


def test_gz_write_same_bytes_as_gz(tmp_path):
    # the groups are compressed from a header and a view into the rendered text (no copy): the bytes
    # must be those of _gz(header + body), the gzip of the generator before it was sped up
    rng = np.random.default_rng(1)
    text = b"".join(b"%d,%s,%.6f\n" % (i, rng.bytes(8).hex().encode(), rng.normal()) for i in range(20_000))
    for cut in (0, 1, 17, 65_536, len(text)):
        body = memoryview(text)[cut:]
        ex._gz_write(tmp_path / "x.csv.gz", b"a,b,c\n", body)
        got = (tmp_path / "x.csv.gz").read_bytes()
        assert got == ex._gz(b"a,b,c\n" + bytes(body))
        assert gzip.decompress(got) == b"a,b,c\n" + bytes(body)


def test_seed_changes_the_draws():
    counts = []
    for seed in (ex.DEFAULT_SEED, ex.DEFAULT_SEED, 7):
        b = ex._Builder(seed)
        b.simulate()
        counts.append(b.counts)
    assert (counts[0] == counts[1]).all() and (counts[0] != counts[2]).any()


def test_layout_and_labels(example_dir):
    assert "ILLUSTRATIVE" in (example_dir / "README.txt").read_text()
    man = json.loads((example_dir / "manifest.json").read_text())
    assert man["illustrative"] and man["generator_version"] == ex.GENERATOR_VERSION
    assert all("ILLUSTRATIVE" in f["provenance"] for f in man["files"].values())
    assert len(list((example_dir / "police_uk").glob("*/*-street.csv.gz"))) == 132 * len(ex.FORCES)
    with gzip.open(example_dir / "police_uk/2023-07/2023-07-durham-street.csv.gz", "rt") as fh:
        header = fh.readline().strip()
    assert header == ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,"
                      "LSOA name,Crime type,Last outcome category,Context")
    ext = pd.read_csv(example_dir / "force_extract/durham_extract_FY2023-24.csv.gz", dtype=str)
    for col in ("crime_ref", "victim_name", "victim_dob", "offender_name", "latitude", "longitude",
                "knife_flag", "da_flag", "alcohol_flag", "nte_zone", "victim_age", "lsoa_code"):
        assert col in ext.columns
    assert ext["crime_ref"].is_unique and ext["lsoa_name"].str.endswith("(illustrative)").all()
    assert ext["lsoa_code"].str.fullmatch(r"E01\d{6}").all()
    lk = pd.read_csv(example_dir / "lookups/lsoa_lookup.csv")
    n = lk.groupby("area_code").size()
    assert 300 <= n["E06000047"] <= 340 and 60 <= n["E06000005"] <= 70


def test_partnership_police_uk_consistent_with_force_extract(example_dir):
    ext = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((example_dir / "force_extract").glob("*.csv.gz")))
    ext["month"] = ext["recorded_date"].str[:7]
    types = {"Violence against the person": "Violence and sexual offences", "Sexual offences":
             "Violence and sexual offences", "Robbery": "Robbery", "Possession of weapons offences":
             "Possession of weapons"}
    ext["crime_type"] = ext["offence_group"].map(types)
    a = ext.groupby(["month", "lsoa_code", "crime_type"]).size()
    puk = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((example_dir / "police_uk").glob("*/*-durham-street.csv.gz")))
    b = puk.groupby(["Month", "LSOA code", "Crime type"]).size()
    b.index.names = a.index.names
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())


def test_magnitudes(long):
    # Durham force area knife crime: about 400 a year in 2023/24, lower in 2015/16
    k23 = _fy_total(long, "knife_crime", P, 2023)
    assert 320 <= k23 <= 480
    assert 220 <= _fy_total(long, "knife_crime", P, 2015) <= 400
    # homicide: a handful a year
    for fy in range(2015, 2025):
        assert 0 <= _fy_total(long, "homicide", P, fy) <= 15
    # Cleveland-like X99 admissions: roughly 75-85 a year for ~440-550k people
    x99 = [_fy_total(long, "knife_admissions", CLEVELAND, fy) for fy in range(2016, 2025)]
    assert 50 <= sum(x99) / len(x99) <= 110
    # youth first-time entrants: ~250 per 100,000 aged 10-17 before the intervention (County Durham)
    cd = long[(long["measure"] == "fte_youth") & (long["area_code"] == "E06000047")]
    pre = cd[(cd["period"] >= "2021-10") & (cd["period"] <= "2022-09")]
    rate = pre["count"].sum() / pre["population"].mean() * 100_000
    assert 170 <= rate <= 330
    # populations
    pop = long[(long["measure"] == "knife_crime") & (long["period"] == "2021-06")].set_index("area_code")["population"]
    assert 500_000 <= pop["E06000047"] <= 560_000 and 100_000 <= pop["E06000005"] <= 115_000
    # series of tens per month for the priority measures in the partnership
    for m, lo in (("nte_violence", 30), ("violence_injury_18_35", 100), ("knife_crime_u25", 5)):
        s = long[(long["measure"] == m) & long["area_code"].isin(P)].groupby("period")["count"].sum()
        assert s.mean() >= lo, m


def test_seasonality_covid_and_ndqis(long):
    allv = long[long["measure"] == "violence_sexual"].groupby("period")["count"].sum()
    summer = allv[allv.index.str[5:].isin(["06", "07"])].mean()
    february = allv[allv.index.str[5:] == "02"].mean()
    assert summer > 1.05 * february
    nte = long[(long["measure"] == "nte_violence")].groupby("period")["count"].sum()
    assert nte[["2020-04", "2020-05"]].mean() < 0.6 * nte[["2019-04", "2019-05"]].mean()
    # NDQIS: knife crime in 2021/22 well above 2019/20 although violence barely moved
    kn = long[long["measure"] == "knife_crime"]
    k = lambda lo, hi: kn[(kn["period"] >= lo) & (kn["period"] <= hi)]["count"].sum()  # noqa: E731
    assert k("2021-07", "2022-06") > 1.05 * k("2018-07", "2019-06")


def test_truth_consistent_with_interventions_yaml(example_dir):
    truth = json.loads((example_dir / "truth.json").read_text())
    cat = Catalog.load(PARAMS)
    assert truth["illustrative"] and truth["period"] == {"start": ex.START, "end": ex.END}
    ivs = {t["id"]: t for t in truth["interventions"]}
    assert set(ivs) == set(cat.interventions)
    for iid, iv in cat.interventions.items():
        t = ivs[iid]
        assert t["start"] == iv.start and t["phase_in_months"] == iv.phase_in_months
        assert sorted(t["areas"]) == sorted(iv.areas) and sorted(t["lsoas"]) == sorted(iv.lsoas)
        primary = {e["measure"]: e for e in t["effects"] if e["primary"]}
        assert set(primary) == set(iv.measures)
        for e in primary.values():
            assert 0.5 <= e["rate_ratio"] <= 1.0 and e["definition"]
    assert ivs["nte_safe_streets"]["cohorts"]["2023-10"] == list(ex.INJECTIONS[1].cohorts["2023-10"])
    nulls = {(t["id"], e["measure"]) for t in truth["interventions"] for e in t["effects"] if e["null"]}
    assert ("focused_deterrence", "knife_admissions") in nulls
    fd = {e["measure"]: e["rate_ratio"] for e in ivs["focused_deterrence"]["effects"]}
    assert fd["homicide"] < 1.0
    # implied (diluted) effects lie between the primary rate ratio and 1
    yn = {e["measure"]: e["rate_ratio"] for e in ivs["youth_navigators"]["effects"]}
    assert 0.8 < yn["knife_crime"] < 1.0


def test_ramp():
    assert ex.ramp(-1, 6) == 0.0 and ex.ramp(0, 0) == 1.0
    assert ex.ramp(0, 6) == pytest.approx(1 / 6) and ex.ramp(5, 6) == 1.0 and ex.ramp(30, 6) == 1.0


def test_injected_effects_visible(long, example_dir):
    """Crude ratio-of-ratios checks that the injected effects are in the data (designs do better)."""
    def ratio(measure, areas, pre, post):
        m = long[(long["measure"] == measure) & long["area_code"].isin(areas)]
        a = m[(m["period"] >= pre[0]) & (m["period"] <= pre[1])]["count"].sum()
        b = m[(m["period"] >= post[0]) & (m["period"] <= post[1])]["count"].sum()
        return b / a
    comp = Catalog.load(PARAMS).groups["most_similar"]
    pre, post = ("2022-07", "2023-06"), ("2024-01", "2024-12")
    vi = ratio("violence_injury_18_35", P, pre, post) / ratio("violence_injury_18_35", comp, pre, post)
    assert 0.75 <= vi <= 0.95
    pre, post = ("2021-04", "2022-09"), ("2023-04", "2025-03")
    fte = ratio("fte_youth", ["E06000047"], pre, post) / ratio("fte_youth", comp, pre, post)
    assert 0.65 <= fte <= 0.95
    # true null: knife admissions in the partnership move like the comparison areas
    pre, post = ("2021-04", "2023-12"), ("2024-01", "2026-03")
    null = ratio("knife_admissions", P, pre, post) / ratio("knife_admissions", comp, pre, post)
    assert 0.8 <= null <= 1.25


def test_ensure_example_reuses_and_is_atomic(example_dir, tmp_path, monkeypatch):
    before = (example_dir / "manifest.json").stat().st_mtime_ns
    assert ex.ensure_example(example_dir) == example_dir.resolve()
    assert (example_dir / "manifest.json").stat().st_mtime_ns == before
    assert ex.is_current(example_dir) and not ex.is_current(example_dir, seed=1)
    # a stale version stamp is detected
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "manifest.json").write_text(json.dumps({"generator_version": "0.0.1", "seed": ex.DEFAULT_SEED}))
    assert not ex.is_current(stale)
    # a crash while generating leaves neither a half dataset nor temporary folders
    def boom(out_dir, seed=ex.DEFAULT_SEED):
        Path(out_dir, "half.csv").write_text("x")
        raise RuntimeError("crash")
    monkeypatch.setattr(ex, "generate", boom)
    target = tmp_path / "crash" / "example"
    with pytest.raises(RuntimeError):
        ex.ensure_example(target)
    assert not target.exists()
    assert list((tmp_path / "crash").iterdir()) == []
    # a stale folder is left intact when regeneration fails
    with pytest.raises(RuntimeError):
        ex.ensure_example(stale)
    assert (stale / "manifest.json").exists()
