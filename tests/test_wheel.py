"""The wheel is the product: nothing may work only from the checkout.

``test_wheel_holds_every_package`` builds the wheel from the repository (no network) and checks
its file list against the source tree: every directory of modules under r1mega/ and kernels/
(kernels/ installs as ``r1mega_kernels``) and every data file next to them. A directory without
an ``__init__.py`` is skipped by setuptools' ``find_packages``, and this test names it.

``test_installed_wheel_runs_outside_checkout`` installs that wheel into a fresh virtual
environment that sees the already-installed dependencies but neither the source tree nor the
editable install of r1mega, and runs ``r1mega`` from there: imports, ``config --schema`` and a
one-step ``tiny --quick`` run, and a program in the code sandbox with the launcher the wheel built.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.dist import REPO

# source directory -> import name of the package it installs as
SOURCE_PACKAGES = {"r1mega": "r1mega", "kernels": "r1mega_kernels"}
# not needed at run time: documentation next to the code
DOC_SUFFIXES = (".md", ".rst")
# repository-root entries that are build outputs or environments, not sources
NOT_SOURCES = {".git", ".venv", "build", "dist", "runs", ".pytest_cache", ".whl", ".gl"}
# where scripts/setup_env.sh puts the launcher it builds (a build output, not a source)
NATIVE_BIN = "r1mega/sandbox/bin"


def _walk(top: str):
    for d, dirs, files in os.walk(os.path.join(REPO, top)):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
        yield d, sorted(f for f in files if not f.startswith(".") and not f.endswith((".pyc", ".pyo")))


def _wheel_path(src: str) -> str:
    """``kernels/x.py`` -> ``r1mega_kernels/x.py`` (the path inside the wheel)."""
    top, _, rest = src.partition("/")
    return "/".join(p for p in (SOURCE_PACKAGES[top], rest) if p)


def expected_packages() -> dict[str, list[str]]:
    """Every source directory holding .py files -> its .py files (repository-relative paths)."""
    out = {}
    for top in SOURCE_PACKAGES:
        for d, files in _walk(top):
            py = [f for f in files if f.endswith(".py")]
            if py:
                rel = os.path.relpath(d, REPO).replace(os.sep, "/")
                out[rel] = [f"{rel}/{f}" for f in py]
    return out


def expected_data() -> list[str]:
    """Every non-Python file under the package trees, documentation aside."""
    out = []
    for top in SOURCE_PACKAGES:
        for d, files in _walk(top):
            rel = os.path.relpath(d, REPO).replace(os.sep, "/")
            if rel != NATIVE_BIN:
                out += [f"{rel}/{f}" for f in files if not f.endswith((".py", *DOC_SUFFIXES))]
    return out


def _copy_sources(dst: str) -> None:
    """The repository without its build outputs: an in-place build reuses ``build/lib``, whose
    leftovers (a package that has since lost its ``__init__.py``) would end up in the wheel."""
    def ignore(d, names):
        out = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
        if os.path.samefile(d, REPO):
            out |= NOT_SOURCES & set(names)
        if os.path.samefile(d, os.path.join(REPO, "r1mega", "sandbox")):
            out |= {"bin"}  # the checkout's launcher: the wheel must build its own
        return out
    shutil.copytree(REPO, dst, ignore=ignore, symlinks=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = str(tmp / "src"), str(tmp / "dist")
    _copy_sources(src)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", out], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = [f for f in os.listdir(out) if f.startswith("r1mega-") and f.endswith(".whl")]
    assert len(wheels) == 1, os.listdir(out)
    return os.path.join(out, wheels[0])


def test_wheel_holds_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = expected_packages()
    assert "r1mega/trainer" in packages and "kernels" in packages, sorted(packages)  # the walk itself works
    missing = {}
    for d, modules in packages.items():
        lost = [m for m in [f"{d}/__init__.py", *modules] if _wheel_path(m) not in names]
        if lost:
            missing[d] = lost
    assert not missing, (
        "package directories missing from the wheel (a directory of modules needs an __init__.py, or "
        "setuptools' find_packages skips it):\n" + "\n".join(
            f"  {d} -> {_wheel_path(d)}: {', '.join(os.path.basename(m) for m in lost)}"
            f"{'' if os.path.exists(os.path.join(REPO, d, '__init__.py')) else '  (no __init__.py)'}"
            for d, lost in sorted(missing.items())))

    data = expected_data()
    assert "r1mega/recipes/tiny_cpu.yaml" in data, data
    lost = [f for f in data if _wheel_path(f) not in names]
    assert not lost, f"data files missing from the wheel (declare them in setup.py's package_data): {lost}"

    # the native parts, built at install time (setup.py runs CMake), not copied from the checkout
    assert "r1mega/sandbox/bin/r1mega-sandbox" in names, "the sandbox launcher was not built into the wheel"
    info = zipfile.ZipFile(wheel).getinfo("r1mega/sandbox/bin/r1mega-sandbox")
    assert (info.external_attr >> 16) & 0o111, "the sandbox launcher is not executable in the wheel"

    dist_info = {n.split("/", 1)[0] for n in names if n.endswith(".dist-info/WHEEL")}
    tops = {n.split("/", 1)[0] for n in names} - dist_info
    assert len(dist_info) == 1 and tops == set(SOURCE_PACKAGES.values()), sorted(tops)  # no bare `kernels`, no tests
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "r1mega = r1mega.cli:main" in entry_points, entry_points


def _dependency_paths() -> list[str]:
    """Where the running interpreter finds the installed dependencies (its site-packages)."""
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return [p for p in dict.fromkeys(os.path.realpath(p) for p in paths) if os.path.isdir(p)]


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


IMPORT_CHECK = """
import importlib, json, sys
mods = ["r1mega", "r1mega.trainer.loop", "r1mega.parallel.init", "r1mega_kernels"]
files = {m: importlib.import_module(m).__file__ for m in mods}
print(json.dumps({"files": files, "path": sys.path, "prefix": sys.prefix,
                  "editable": [m for m in sys.modules if "editable" in m.lower()]
                              + [repr(f) for f in sys.meta_path if "editable" in str(getattr(f, "__module__", "")).lower()]}))
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_installed_wheel_runs_outside_checkout(wheel, tmp_path):
    assert not _inside(str(tmp_path), REPO), f"the temporary directory {tmp_path} is inside the repository"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # install before the dependencies become visible: pip then sees only this environment
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    new_site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    # A path line in a .pth only adds the directory to sys.path; that directory's own .pth files
    # (the editable finder of the checkout's r1mega among them) are not processed.
    with open(os.path.join(new_site, "_r1mega_test_deps.pth"), "w") as f:
        f.write("\n".join(_dependency_paths()) + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=str(venv / "bin") + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=str(venv),
               OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false",
               VLLM_ENABLE_V1_MULTIPROCESSING="0")

    def run(*cmd, timeout=300):
        proc = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return proc.stdout

    found = json.loads(run(py, "-c", IMPORT_CHECK).strip().splitlines()[-1])
    print("imported from:", json.dumps(found["files"], indent=2))
    assert not found["editable"], f"the checkout's editable install is active: {found['editable']}"
    assert not [p for p in found["path"] if p and os.path.isdir(p) and os.path.samefile(p, REPO)], found["path"]
    for mod, file in found["files"].items():
        assert _inside(file, str(venv)) and not _inside(file, REPO), f"{mod} imported from {file}, not the new venv"

    sandboxed = json.loads(run(str(venv / "bin" / "r1mega"), "sandbox", "--json", "--", "python3", "-c", "print(6 * 7)"))
    assert (sandboxed["status"], sandboxed["stdout"], sandboxed["isolated"]) == ("ok", "42\n", True), sandboxed

    schema = run(str(venv / "bin" / "r1mega"), "config", "--schema")
    assert "  rollout.temperature (" in schema and "  run.steps (" in schema, schema[:2000]

    out = work / "tiny"
    run(str(venv / "bin" / "r1mega"), "tiny", "--quick", "--out", str(out), "run.steps=1", timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert {"before", "after", "rl_steps", "run_dir", "policy_hf", "wall_time_s"} <= set(summary), sorted(summary)
    assert summary["rl_steps"] == 1 and 0.0 <= summary["after"]["eval/pass@1"] <= 1.0, summary
    records = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines() if line]
    assert [int(r["step"]) for r in records if "actor/loss" in r] == [1], records
    assert (out / "grpo" / "hf" / "config.json").exists() and _inside(summary["run_dir"], str(work)), summary["run_dir"]
