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
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def report(session):
    session.install("-e", ".")
    session.run("sveval", "pipeline", *session.posargs)


@nox.session
def bench(session):
    """Benchmarks; pass names to run a subset, e.g. ``nox -s bench -- its_coverage``."""
    session.install("-e", ".")
    import pathlib

    wanted = set(session.posargs)
    for script in sorted(pathlib.Path("benchmarks").glob("*.py")):
        if script.name.startswith("_"):
            continue
        if wanted and script.stem not in wanted:
            continue
        session.run("python", str(script))
