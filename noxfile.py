"""Sessions: `nox` (tests), `nox -s lint`, `nox -s reproduce [-- SUITE ...]`, `nox -s bench [-- ARGS]`, `nox -s rehearse`."""

from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")
TEST_PATHS = ["tests", "plugins/sds-bench-ria/tests"]


def install(session: nox.Session, extras: str) -> None:
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite and the example plugin's own tests, printing the 15 slowest; pytest arguments go after --:
    `nox -s tests -- -m "not slow"` is the quick subset; naming test paths runs only those."""
    install(session, "eval,cluster,dev")
    session.install(*CONSTRAINTS, "-e", "plugins/sds-bench-ria")
    paths = [] if any(Path(arg.split("::")[0]).exists() for arg in session.posargs) else TEST_PATHS
    session.run("pytest", "--durations=15", *paths, *session.posargs)


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


@nox.session(default=False)
def rehearse(session: nox.Session) -> None:
    """The paper grid rehearsed offline at real shapes (random opt-125m and 2-block llama-7b in a hub-layout cache):
    writes results/rehearsal/; arguments go to benchmarks/rehearse.py (`-- --help`)."""
    install(session, "eval,cluster")
    session.run("python", "benchmarks/rehearse.py", *session.posargs)
