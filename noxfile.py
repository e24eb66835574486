"""Sessions: `nox` (tests), `nox -s lint`, `nox -s reproduce [-- SUITE ...]`, `nox -s bench [-- ARGS]`."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


def install(session: nox.Session, extras: str) -> None:
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pass pytest arguments after --, e.g. `nox -s tests -- -m 'not slow'`)."""
    install(session, "eval,cluster,dev")
    session.install(*CONSTRAINTS, "-e", "plugins/sds-bench-ria")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", "sds_bench", "tests", "benchmarks", "plugins", "noxfile.py")


@nox.session(default=False)
def reproduce(session: nox.Session) -> None:
    """Recompute the embedded suite and its tables, or run a suite resumably: `nox -s reproduce -- paper-opt`."""
    install(session, "eval,cluster")
    args = session.posargs or ["embedded", "--fresh"]
    session.run("sds-bench", "run", *args)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The 2:4 kernel benchmark (needs a CUDA GPU of compute capability >= 8.0; says so and exits 0 otherwise)."""
    install(session, "dev")
    session.run("sds-bench", "bench", "kernels", *session.posargs)
