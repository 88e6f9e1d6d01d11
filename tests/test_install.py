"""The built wheel, installed into a fresh venv next to another owner of `agents` and `trainer`.

evoinstruct once installed five generic top-level names (agents, graph, store,
trainer, prompts). Other distributions own some of them (openai-agents installs
`agents`, coqui's trainer installs `trainer`), so installing evoinstruct
overwrote their files; and a detached daemon, started with the project as its
working directory, imported a project's `prompts/` override folder in place of
the packaged `prompts` and died. Everything now installs under `evoinstruct.*`.

The fresh venv gets no dependencies from pip: a `.pth` file appends the
development venv's site-packages as a plain path, which does not run the `.pth`
files in it, so the development venv's editable install of evoinstruct stays
inactive and only the wheel under test can answer `import evoinstruct`. While
pip runs, the `.pth` hides that path, so pip sees a venv holding nothing but
what this test installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.daemon_helpers import configure_for_server
from tests.fake_teacher import server_reply
from tests.openai_server import OpenAITestServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HIDE_DEPS = "EVO_INSTALL_TEST_HIDE_DEPS"
SECRET = "sk-install-test-7c2e"
OVERRIDE_MARK = "EVO-OVERRIDE-MARK-respond"
BARE_NAMES = ("agents", "graph", "store", "text", "trainer", "prompts")


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put other code on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(cmd: list, *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=str(cwd),
        env=env if env is not None else _clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """This interpreter's pip, offline, with the deps path of the target venv hidden."""
    cmd = [sys.executable, "-m", "pip", "--no-input", *args]
    return _ok(_run(cmd, cwd=cwd, env=_clean_env(**{HIDE_DEPS: "1"})))


def _install(python: Path, wheel: Path) -> None:
    _pip(
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        str(wheel),
        cwd=wheel.parent,
    )


def _build_wheel(source: Path, out: Path, cwd: Path) -> Path:
    _pip(
        "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
        "-q", "-w", str(out), str(source), cwd=cwd,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


@dataclass
class Wheels:
    evoinstruct: Path
    standin: Path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    """The evoinstruct wheel, and one of a distribution that owns `agents` and `trainer`."""
    work = tmp_path_factory.mktemp("wheels")
    # Build from a copy: an in-tree build writes build/ and *.egg-info into the checkout,
    # and a stale build/lib would leak removed modules into later wheels.
    source = work / "evoinstruct-src"
    source.mkdir()
    pyproject = REPO / "pyproject.toml"
    shutil.copy2(pyproject, source)
    shutil.copy2(REPO / "README.md", source)
    package_dirs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    for folder in sorted(set(package_dirs.values())):
        shutil.copytree(
            REPO / folder,
            source / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    evoinstruct = _build_wheel(source, work / "dist-evoinstruct", work)

    standin = work / "standin-src"
    standin.mkdir()
    (standin / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "standin-agents"\nversion = "1.0"\n\n'
        '[tool.setuptools]\npackages = ["agents", "trainer"]\n'
    )
    for name in ("agents", "trainer"):
        (standin / name).mkdir()
        (standin / name / "__init__.py").write_text('OWNER = "standin"\n')
    return Wheels(evoinstruct, _build_wheel(standin, work / "dist-standin", work))


@dataclass
class Venv:
    root: Path
    python: Path
    cli: Path
    elsewhere: Path  # an unrelated working directory

    def py(self, code: str) -> subprocess.CompletedProcess:
        return _run([self.python, "-c", code], cwd=self.elsewhere)

    def evo(self, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return _run(
            [self.cli, *args], cwd=cwd or self.elsewhere, env=_clean_env(EVO_TEST_KEY=SECRET)
        )


def _site_packages(python: Path) -> Path:
    out = _ok(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=python.parent,
        )
    )
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def venv(wheels: Wheels, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv holding the stand-in distribution, then evoinstruct on top of it."""
    root = tmp_path_factory.mktemp("venv") / "v"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", root], cwd=elsewhere))
    python = root / "bin" / "python"
    deps = sysconfig.get_paths()["purelib"]  # this (development) venv's site-packages
    # venvs often see site-packages twice (lib and a lib64 link), so append only once.
    (_site_packages(python) / "_evoinstruct_test_deps.pth").write_text(
        f"import os, sys; p = {deps!r}; "
        f"os.environ.get({HIDE_DEPS!r}) or p in sys.path or sys.path.append(p)\n"
    )
    env = Venv(root, python, root / "bin" / "evoinstruct", elsewhere)
    probe = env.py("import typer, langgraph; import evoinstruct")
    assert probe.returncode != 0 and "No module named 'evoinstruct'" in probe.stderr, (
        "the test venv sees an evoinstruct other than the wheel under test:\n" + probe.stderr
    )
    _install(python, wheels.standin)
    _install(python, wheels.evoinstruct)
    return env


def test_the_wheel_has_one_top_level_name_and_its_data(wheels: Wheels) -> None:
    with zipfile.ZipFile(wheels.evoinstruct) as wheel:
        names = wheel.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        recorded = [line.split(",")[0] for line in wheel.read(record).decode().splitlines() if line]
    assert sorted({n.split("/")[0] for n in names}) == [
        "evoinstruct",
        "evoinstruct-0.1.0.dist-info",
    ]
    assert {n.split("/")[0] for n in recorded} == {"evoinstruct", "evoinstruct-0.1.0.dist-info"}
    assert "evoinstruct/__init__.py" not in names  # a namespace package: no folder of its own
    for bare in BARE_NAMES:
        assert f"evoinstruct/{bare}/__init__.py" in names
    # Package data the CLI reads at run time.
    templates = {p.relative_to(REPO).as_posix() for p in (REPO / "prompts").rglob("*.jinja2")}
    # The constraint phrasings (prompts/phrasings/*.toml) included.
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "prompts").rglob("*.toml")}
    seeds = {
        p.relative_to(REPO).as_posix()
        for pattern in ("*.jsonl", "*.txt")
        for p in (REPO / "prompts" / "seeds").glob(pattern)
    }
    assert templates and data and seeds
    missing = {f"evoinstruct/{p}" for p in templates | data | seeds} - set(names)
    assert not missing, f"package data missing from the wheel: {sorted(missing)}"


def test_installed_next_to_another_owner_of_agents_and_trainer(venv: Venv) -> None:
    owners = _ok(venv.py("import agents, trainer; print(agents.OWNER, trainer.OWNER)"))
    assert owners.stdout.split() == ["standin", "standin"]
    where = _ok(
        venv.py(
            "import evoinstruct, evoinstruct.graph, evoinstruct.agents, evoinstruct.trainer, "
            "evoinstruct.prompts.library as lib, evoinstruct.cli.main; "
            "print(getattr(evoinstruct, '__file__', None)); print(evoinstruct.graph.__file__); "
            "print(lib._PACKAGE_ROOT)"
        )
    )
    init, graph_file, prompts_root = where.stdout.splitlines()
    site = _site_packages(venv.python)
    assert init == "None"  # PEP 420 namespace
    assert Path(graph_file).is_relative_to(site), graph_file
    assert Path(prompts_root) == site / "evoinstruct" / "prompts"
    for bare in ("graph", "store", "prompts"):
        result = venv.py(f"import {bare}")
        assert result.returncode == 1 and f"ModuleNotFoundError: No module named '{bare}'" in (
            result.stderr
        ), result.stderr


def test_console_script_init_and_seed_add(venv: Venv) -> None:
    assert "Usage" in _ok(venv.evo("--help")).stdout
    # The daemon starts training as `python -m evoinstruct.trainer`.
    trainer = _run([venv.python, "-m", "evoinstruct.trainer", "--help"], cwd=venv.elsewhere)
    assert "usage: python -m evoinstruct.trainer" in _ok(trainer).stdout
    project = venv.elsewhere / "seeded"
    _ok(venv.evo("init", project))
    seeds = sorted((project / "seeds").glob("*.jsonl"))
    assert [p.name for p in seeds] == ["seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"]
    reports = json.loads(_ok(venv.evo("seed", "add", *seeds, "-p", project, "--json")).stdout)
    lines = [sum(1 for line in p.read_text().splitlines() if line.strip()) for p in seeds]
    assert [(r["records"], r["inserted"]) for r in reports] == [(n, n) for n in lines]
    status = json.loads(_ok(venv.evo("status", "--json", "-p", project)).stdout)
    assert status["examples"]["total"] == sum(lines)
    assert status["examples"]["by_status"]["accepted"] == sum(lines)


def test_uninstall_leaves_the_other_owner(venv: Venv, wheels: Wheels) -> None:
    _pip("--python", str(venv.python), "uninstall", "-y", "-q", "evoinstruct", cwd=venv.elsewhere)
    try:
        assert (
            _ok(
                venv.py("import agents, trainer; print(agents.OWNER + trainer.OWNER)")
            ).stdout.strip()
            == "standinstandin"
        )
        gone = venv.py("import evoinstruct.graph")
        # pip leaves an empty evoinstruct/ folder behind (no __init__.py names it as ours),
        # which imports as an empty namespace package.
        assert gone.returncode == 1 and "No module named 'evoinstruct" in gone.stderr
        assert not venv.cli.exists()
    finally:  # the other tests of this module may run after this one
        _install(venv.python, wheels.evoinstruct)


def _process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for_the_round(venv: Venv, project: Path, pid: int, server: OpenAITestServer):
    """Poll `status --json` until the daemon says it stopped, or its process is gone."""
    report: dict = {}
    deadline = time.monotonic() + 120  # a hang guard, not the synchronization
    while time.monotonic() < deadline:
        report = json.loads(_ok(venv.evo("status", "--json", "-p", project)).stdout)
        daemon = report["daemon"]
        if (daemon and daemon["state"] != "running") or _process_gone(pid):
            break
        time.sleep(0.2)  # poll interval
    else:
        log = (project / "daemon.log").read_text(encoding="utf-8", errors="replace")
        pytest.fail(
            f"the detached daemon (pid {pid}) neither finished nor stopped: {report}\n{log}"
        )
    deadline = time.monotonic() + 30  # it wrote "stopped"; let it finish exiting
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _process_gone(pid), f"daemon pid {pid} said it stopped but is still running"
    report = json.loads(_ok(venv.evo("status", "--json", "-p", project)).stdout)
    return report, [m["content"] for body in server.bodies for m in body["messages"]]


def _end(pid: int) -> None:
    """Stop the daemon this test started, should a failure leave it running."""
    if _process_gone(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=30)
    if not _process_gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_detached_daemon_in_a_project_that_overrides_prompts(venv: Venv) -> None:
    project = venv.elsewhere / "with-prompts"
    _ok(venv.evo("init", project))
    for lang in ("en", "zh"):
        packaged = (REPO / "prompts" / lang / "respond.jinja2").read_text(encoding="utf-8")
        override = project / "prompts" / lang / "respond.jinja2"
        override.parent.mkdir(parents=True)
        override.write_text(f"{OVERRIDE_MARK}-{lang}\n{packaged}", encoding="utf-8")
    # A user's helper script named like a library the daemon imports: the `evoinstruct`
    # command never imports from its working directory, and neither may the daemon.
    (project / "jinja2.py").write_text(
        'raise ImportError("the project\'s jinja2.py was imported")\n'
    )
    with OpenAITestServer(reply=server_reply, api_key=SECRET) as server:
        configure_for_server(project, server.url)
        _ok(venv.evo("seed", "add", project / "seeds" / "seed_tasks_en.jsonl", "-p", project))
        # From the project folder, where `prompts/` once shadowed the package.
        started = _ok(venv.evo("run", "--detach", "--rounds", "1", "-p", project, cwd=project))
        assert "Daemon started, pid" in started.stdout, started.stdout
        pid = int(started.stdout.split("pid", 1)[1].split(";", 1)[0])
        try:
            report, prompts_sent = _wait_for_the_round(venv, project, pid, server)
        finally:
            _end(pid)

    log = (project / "daemon.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "no prompt template" not in log, log
    assert "jinja2.py was imported" not in log, log
    assert report["rounds"] == 1, f"{report}\n{log}"
    assert report["daemon"]["state"] == "stopped" and not report["daemon"]["running"]
    assert report["examples"]["by_round"], report
    # The project's override was rendered, from the project folder, by the installed package.
    assert any(text.startswith(f"{OVERRIDE_MARK}-en") for text in prompts_sent)
    assert SECRET not in log
