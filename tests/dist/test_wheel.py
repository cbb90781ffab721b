"""The built wheel installs and works where agents run (issue 12).

`make test-dist` builds dist/ (`make dist`) and runs this module with
``ABATHUR_DIST_DIR`` (the wheel and the sdist) and ``ABATHUR_DIST_PYTHONS``
(interpreters, ``:``-separated; 3.12 and 3.13 in CI). For each interpreter it
makes a fresh venv, installs the wheel with ``-c constraints.txt`` (so the run
is reproducible; PyPI must be reachable), and runs the README tour and the
command line from that install, in a directory away from the source tree. It
takes minutes, so `make test` skips it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = os.environ.get("ABATHUR_DIST_DIR")
PYTHONS = [p for p in os.environ.get("ABATHUR_DIST_PYTHONS", "").split(":") if p]

pytestmark = pytest.mark.skipif(
    not DIST, reason="needs ABATHUR_DIST_DIR: run `make test-dist`, which builds it"
)

SRC = ROOT / "src" / "abathur"
# Files that exist only as package data: the bundled model, the migrations.
DATA = sorted(
    [p.relative_to(SRC.parent).as_posix() for p in (SRC / "embeddings" / "model").iterdir()]
    + [p.relative_to(SRC.parent).as_posix() for p in (SRC / "backends" / "sqlite" / "migrations").glob("*.sql")]
    + ["abathur/py.typed"]
)


def artifact(pattern: str) -> Path:
    found = sorted(Path(DIST or ".").resolve().glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {DIST}, found {found}"
    return found[0]


def run(args: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # No ABATHUR_* from the caller's environment, and no PYTHONPATH that could
    # let the source tree stand in for the installed wheel.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def readme_tour() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


def promised_output(tour: str) -> list[str]:
    """The README's ``print(...)  # output`` comments, in order."""
    return [
        line.split("  # ", 1)[1]
        for line in tour.splitlines()
        if line.strip().startswith("print(") and "  # " in line
    ]


def test_the_promised_output_is_read_from_the_tour() -> None:
    # Guard: the tour check below must have something to compare.
    assert len(promised_output(readme_tour())) >= 3


def test_the_wheel_holds_the_model_migrations_and_py_typed() -> None:
    names = set(zipfile.ZipFile(artifact("*.whl")).namelist())
    missing = [name for name in DATA if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert "abathur/embeddings/model/model.onnx" in DATA


def test_the_sdist_builds_the_same_wheel(tmp_path: Path) -> None:
    sdist = artifact("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {f"src/{name}" for name in DATA} <= members
    out = tmp_path / "wheel"
    # pip builds it with the pinned setuptools from [build-system], isolated.
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, sdist], tmp_path)
    (rebuilt,) = out.glob("*.whl")
    assert rebuilt.name == artifact("*.whl").name

    def files(path: Path) -> set[str]:
        return {n for n in zipfile.ZipFile(path).namelist() if not n.endswith("RECORD")}

    assert files(rebuilt) == files(artifact("*.whl"))


@pytest.fixture(scope="module", params=PYTHONS or ["(none given)"])
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv of one interpreter with only the wheel (and its pins) in it."""
    python = request.param
    if not PYTHONS:
        pytest.fail("ABATHUR_DIST_PYTHONS names no interpreter")
    where = tmp_path_factory.mktemp("venv")
    run([python, "-m", "venv", where], cwd=where)
    bin_dir = where / "bin"
    run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt",
         artifact("*.whl")],
        cwd=where,
    )  # fmt: skip
    return bin_dir


def test_it_is_the_wheel_that_is_imported(installed: Path, tmp_path: Path) -> None:
    done = run([installed / "python", "-c", "import abathur; print(abathur.__file__)"], tmp_path)
    origin = Path(done.stdout.strip())
    assert origin.is_relative_to(installed.parent), origin
    assert "site-packages" in origin.parts


def test_the_readme_tour_prints_what_it_promises(installed: Path, tmp_path: Path) -> None:
    tour = readme_tour()
    done = run([installed / "python", "-c", tour], tmp_path)
    lines = iter(done.stdout.splitlines())
    # Each promised line appears, in order (`in` on an iterator consumes it).
    for expected in promised_output(tour):
        assert expected in lines, f"the tour did not print {expected!r}:\n{done.stdout}"


def test_the_cli_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    version = run([installed / "abathur", "--version"], tmp_path).stdout
    assert version.split() == ["abathur,", "version", "0.1.0"]
    created = json.loads(
        run([installed / "abathur", "init", "--db", "a.db", "--json"], tmp_path).stdout
    )
    migrations = [n for n in DATA if n.startswith("abathur/backends/sqlite/migrations/")]
    assert created["schema_version"] == len(migrations)
    info = json.loads(
        run([installed / "abathur", "info", "--db", "a.db", "--json"], tmp_path).stdout
    )
    assert info["schema_version"] == info["latest_schema_version"] == len(migrations)
    assert tuple(map(int, info["versions"]["sqlite"].split("."))) >= (3, 51, 3)


def test_it_installs_beside_the_issues_pydantic_pin(installed: Path, tmp_path: Path) -> None:
    # `pip install ./abathur pydantic==2.10.6` was ResolutionImpossible with exact
    # pins; a dry run resolves it for real, without constraints.txt.
    done = run(
        [installed / "python", "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--report", tmp_path / "report.json", "--quiet", artifact("*.whl"), "pydantic==2.10.6"],
        cwd=tmp_path,
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text("utf-8"))
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    assert chosen["pydantic"] == "2.10.6", done.stdout
    assert chosen["abathur"] == "0.1.0"
