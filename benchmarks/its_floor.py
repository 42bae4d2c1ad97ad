"""The work of one ITS evaluation's notebook as a plain Python script: no kernel, no papermill, no
notebook written (``run_speed.py``'s ``one_its_script`` case).

It imports what the notebook imports, prepares the evaluation, fits it with all its checks and
power study, builds the published record and draws the notebook's five figures to PNG (Agg, as the
inline backend) and its effects table to HTML. Its time is a floor for a first (cold) run of
``sveval run`` on the same file, whatever runs the notebook: a fresh process has to do at least
this much.

Usage: ``python benchmarks/its_floor.py PROJECT_ROOT EVALUATION_ID``
"""

from __future__ import annotations

import io
import sys
from pathlib import Path


def main(root: Path, eid: str) -> None:
    import matplotlib

    matplotlib.use("agg")
    import sveval
    from sveval.pipeline.api import build_record, prepare_notebook
    from sveval.report import narrative, plots

    ctx = prepare_notebook(str(root / "parameters" / "evaluations" / f"{eid}.yaml"), {}, str(root))
    result = sveval.fit(ctx)
    record = build_record(ctx, result)
    figures = [
        plots.observed_vs_counterfactual(result, title=f"{ctx.measure.name}: {ctx.area_label}",
                                         ylabel=narrative.unit_label(ctx),
                                         data=narrative.published_series(record))[0],
        plots.its.acf_plot(result)[0],
        plots.its.placebo_plot(result)[0],
        plots.its.sensitivity_plot(result)[0],
        plots.its.power_curve(result)[0],
    ]
    for fig in figures:
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    narrative.effects_table(result).style.hide(axis="index").to_html()
    narrative.diagnostics_table(result).style.hide(axis="index").to_html()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
