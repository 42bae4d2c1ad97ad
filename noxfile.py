"""Sessions: tests, lint, report (run the example and publish the site), bench.

    nox -s tests      # the test suite (same command as the README and .ci/run)
    nox -s lint       # ruff
    nox -s report     # every evaluation + tracking + returns on the built-in example, then the site
    nox -s bench      # speed, memory and Monte Carlo coverage benchmarks
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def tests(session):
    session.install("-c", "constraints.txt", "-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def report(session):
    session.install("-c", "constraints.txt", "-e", ".")
    session.run("sveval", "pipeline", *session.posargs)


@nox.session
def bench(session):
    """Benchmarks, with the settings behind the committed results in ``benchmarks/results/``.

    ``nox -s bench`` runs all; ``nox -s bench -- its_coverage``, ``-- did_speed``, ``-- ingest_speed``,
    ``-- its_speed``, ``-- run_speed``, ``-- batch_stability``, ``-- example_speed`` or ``-- publish_speed``
    runs one (the last two compare with an older commit, checked out in a temporary git worktree).
    The ITS coverage benchmark takes about 75 minutes of one core (Gaussian cells about 17, counts about 56).
    """
    session.install("-c", "constraints.txt", "-e", ".")
    wanted = set(session.posargs) or {"its_coverage", "did_speed", "ingest_speed", "its_speed", "run_speed",
                                      "batch_stability", "example_speed", "publish_speed"}
    if "example_speed" in wanted:  # sveval example against the generator before it was sped up
        session.run("python", "benchmarks/example_speed.py", "--repeats", "9",
                    "--out", "benchmarks/results/example_speed.md")
    if "publish_speed" in wanted:  # sveval publish against the code before the parallel publish
        session.run("python", "benchmarks/publish_speed.py", "--out", "benchmarks/results/publish_speed.md")
    if "ingest_speed" in wanted:
        session.run("python", "benchmarks/ingest_speed.py", "--out", "benchmarks/results/ingest_speed.md")
    if "did_speed" in wanted:
        session.run("python", "benchmarks/did_speed.py", "--out", "benchmarks/results/did_speed.md")
    if "its_speed" in wanted:
        session.run("python", "benchmarks/its_speed.py", "--out", "benchmarks/results/its_speed.md")
        # the slow models of the example batch (arima, negbin): their section at the end of the same file
        session.run("python", "benchmarks/its_slow_speed.py", "--out", "benchmarks/results/its_speed.md")
    if "run_speed" in wanted:  # sveval run / pipeline against plain papermill, in one run
        session.run("python", "benchmarks/run_speed.py", "--repeat", "2", "--out", "benchmarks/results/run_speed.md")
    if "batch_stability" in wanted:  # 20 consecutive `sveval run --all --force` batches, 0 failures
        session.run("python", "benchmarks/batch_stability.py", "--batches", "20",
                    "--out", "benchmarks/results/batch_stability.md")
    if "its_coverage" in wanted:
        # 1000 replications a cell for every estimator, except the exact-ML ARIMA comparator (100:
        # about a second a fit)
        for name, dgps, comparator_reps in (("gaussian", "gauss_rho0,gauss_rho0.3,gauss_rho0.6", "1000"),
                                            ("counts", "pois30_ar,low05,negbin", "1000")):
            session.run(
                "python", "-W", "ignore", "benchmarks/its_coverage.py", "--only", dgps,
                "--reps", "1000", "--comparator-reps", comparator_reps, "--seed", "20240601",
                "--json", f"benchmarks/results/its_coverage_{name}.json",
                "--out", f"benchmarks/results/its_coverage_{name}.md",
            )
