"""The registries (measures, areas, interventions) and checks of evaluations against them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from sveval.errors import SpecError
from sveval.spec import (
    AreaRegistry,
    AreaSpec,
    EvaluationSpec,
    InterventionRegistry,
    InterventionSpec,
    MeasureRegistry,
    MeasureSpec,
    load_model,
    read_yaml,
    shorten_value,
)


def _suggest(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Catalog:
    """Measures, areas and interventions, loaded from ``parameters/``."""

    measures: dict[str, MeasureSpec]
    areas: dict[str, AreaSpec]
    groups: dict[str, list[str]]
    interventions: dict[str, InterventionSpec]
    partnership: str
    parameters_dir: Path
    partnership_code: str | None = None

    @classmethod
    def load(cls, parameters_dir: Path | str) -> Catalog:
        pdir = Path(parameters_dir)
        m = load_model(MeasureRegistry, pdir / "measures.yaml")
        a = load_model(AreaRegistry, pdir / "areas.yaml")
        i = load_model(InterventionRegistry, pdir / "interventions.yaml")
        measures = _unique(pdir / "measures.yaml", "measures", [x.id for x in m.measures], m.measures)
        areas = _unique(pdir / "areas.yaml", "areas", [x.code for x in a.areas], a.areas)
        interventions = _unique(
            pdir / "interventions.yaml", "interventions", [x.id for x in i.interventions], i.interventions
        )
        cat = cls(measures, areas, dict(a.groups), interventions, a.partnership, pdir, a.partnership_code)
        cat._check_references()
        return cat

    # -- lookups ------------------------------------------------------------------------------------
    @property
    def partnership_areas(self) -> list[str]:
        return sorted(c for c, a in self.areas.items() if a.role == "partnership")

    @property
    def comparison_areas(self) -> list[str]:
        return sorted(c for c, a in self.areas.items() if a.role == "comparison")

    def area_name(self, code: str) -> str:
        a = self.areas.get(code)
        return a.name if a else code

    def areas_label(self, codes: list[str]) -> str:
        names = [self.area_name(c) for c in codes]
        if set(codes) == set(self.partnership_areas) and len(codes) > 1:
            return self.partnership
        return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]

    def headline_measures(self) -> list[MeasureSpec]:
        return [m for m in self.measures.values() if m.headline]

    def source_kinds(self) -> dict[str, str] | None:
        """Source id -> kind from ``sources.yaml`` beside the registries (None when there is none;
        the file itself is checked by :mod:`sveval.data.sources`)."""
        path = self.parameters_dir / "sources.yaml"
        if not path.is_file():
            return None
        raw = read_yaml(path)
        items = raw.get("sources") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise SpecError(path, [("sources", None, "a list of sources is required")])
        return {str(x.get("id")): str(x.get("kind")) for x in items if isinstance(x, dict)}

    # -- checks -------------------------------------------------------------------------------------
    def _check_references(self) -> None:
        problems = []
        for gname, codes in self.groups.items():
            for c in codes:
                if c not in self.areas:
                    problems.append((f"groups.{gname}", c, "not an area code in this file"))
        if problems:
            raise SpecError(self.parameters_dir / "areas.yaml", problems)
        problems = []
        for k, iv in enumerate(self.interventions.values()):
            for c in iv.areas:
                if c not in self.areas:
                    problems.append(
                        (f"interventions.{k}.areas", c, "unknown area code; see parameters/areas.yaml")
                    )
            for mid in iv.measures:
                if mid not in self.measures:
                    problems.append(
                        (f"interventions.{k}.measures", mid,
                         "unknown measure; allowed: " + ", ".join(sorted(self.measures)) + _suggest(mid, list(self.measures)))
                    )
        if problems:
            raise SpecError(self.parameters_dir / "interventions.yaml", problems)
        problems = []
        sources = self.source_kinds()
        for k, ms in enumerate(self.measures.values()):
            if ms.parent and ms.parent not in self.measures:
                problems.append((f"measures.{k}.parent", ms.parent, "unknown parent measure"))
            if sources is not None and ms.source not in sources:
                problems.append((f"measures.{k}.source", ms.source, "unknown source; sources in "
                                 "sources.yaml: " + ", ".join(sorted(sources)) + _suggest(ms.source, list(sources))))
            elif sources is not None and sources[ms.source] in ("population", "lookup"):
                problems.append((f"measures.{k}.source", ms.source,
                                 f"a {sources[ms.source]} source holds no counts; name a police_uk, "
                                 "records or table source"))
        if problems:
            raise SpecError(self.parameters_dir / "measures.yaml", problems)

    def check_evaluation(self, spec: EvaluationSpec, path: Path) -> None:
        """Refuse references to unknown measures, interventions and areas (before any data is read)."""
        problems = []
        if spec.measure not in self.measures:
            problems.append(
                ("measure", shorten_value(spec.measure),
                 "unknown measure; allowed: " + ", ".join(sorted(self.measures)) + "." + _suggest(spec.measure, list(self.measures)))
            )
        if spec.intervention not in self.interventions:
            problems.append(
                ("intervention", shorten_value(spec.intervention),
                 "unknown intervention; allowed: " + ", ".join(sorted(self.interventions)) + "."
                 + _suggest(spec.intervention, list(self.interventions)))
            )
        for i, c in enumerate(spec.areas):
            if c not in self.areas:
                problems.append((f"areas.{i}", c, "unknown area code; allowed: " + ", ".join(sorted(self.areas))))
        if spec.comparison is not None:
            for i, c in enumerate(spec.comparison.areas):
                if c not in self.areas:
                    problems.append(
                        (f"comparison.areas.{i}", c, "unknown area code; allowed: " + ", ".join(sorted(self.areas)))
                    )
                elif c in spec.areas:
                    problems.append((f"comparison.areas.{i}", c, "a treated area cannot also be a comparison"))
            g = spec.comparison.group
            if g is not None and g not in self.groups:
                problems.append(
                    ("comparison.group", g, "unknown group; allowed: " + ", ".join(sorted(self.groups)) + _suggest(g, list(self.groups)))
                )
        if spec.sensitivity_of is not None:
            problems += _sensitivity_problems(spec, Path(path))
        if problems:
            raise SpecError(path, problems)

    def resolve_comparison(self, spec: EvaluationSpec) -> list[str]:
        """Comparison area codes for an evaluation (empty when it has none or uses LSOAs)."""
        comp = spec.comparison
        if comp is None:
            return []
        if comp.areas:
            codes = list(comp.areas)
        elif comp.group:
            codes = list(self.groups[comp.group])
        elif comp.rule == "all_comparison_areas":
            codes = self.comparison_areas
        else:
            codes = []
        codes = [c for c in codes if c not in spec.areas]
        if comp.exclude_vru:
            codes = [c for c in codes if not self.areas[c].vru]
        return sorted(dict.fromkeys(codes))


def _unique(path: Path, section: str, keys: list[str], items: list) -> dict:
    seen: dict = {}
    problems = []
    for k, (key, item) in enumerate(zip(keys, items, strict=True)):
        if key in seen:
            problems.append((f"{section}.{k}", key, "duplicate id; each must be unique"))
        seen[key] = item
    if problems:
        raise SpecError(path, problems)
    return seen


def _sensitivity_problems(spec: EvaluationSpec, path: Path) -> list[tuple[str, str, str]]:
    """``sensitivity_of`` must name another evaluation file beside this one, of the same
    intervention and measure, that is not itself a sensitivity variant (no chains, so no cycles)."""
    target = path.parent / f"{spec.sensitivity_of}.yaml"
    value = shorten_value(spec.sensitivity_of)
    if not target.is_file():
        others = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != spec.id)
        return [("sensitivity_of", value, "no evaluation with this id in " + str(path.parent)
                 + "." + _suggest(str(spec.sensitivity_of), others))]
    main = load_model(EvaluationSpec, target)
    problems = []
    if main.sensitivity_of is not None:
        problems.append(("sensitivity_of", value, f"'{main.id}' is itself a sensitivity variant (of "
                         f"'{main.sensitivity_of}'); name the main evaluation"))
    if (main.intervention, main.measure) != (spec.intervention, spec.measure):
        problems.append(("sensitivity_of", value, f"'{main.id}' evaluates {main.intervention} on "
                         f"{main.measure}; a sensitivity variant must keep the intervention and measure"))
    return problems
