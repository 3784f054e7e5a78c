"""Run an untrusted program in the native sandbox (``csrc/sandbox/r1mega_sandbox.c``). Pure Python.

    res = run_sandboxed(["python3", "-"], stdin=b"print(6 * 7)", time_limit_s=2)
    res.status, res.exit_code, res.stdout        # "ok", 0, "42\\n"

What the program sees: a root of its own (a tmpfs) holding read-only binds of the system
directories (``/usr``, ``/lib``, ``/lib64``, ``/bin``, ``/etc/ld.so.cache``...) and of the install
prefix of the command it runs (``/root/.pyenv/versions/3.11.7`` for a pyenv Python), a writable
``/scratch`` (its working directory, a size-capped tmpfs holding the ``files`` given) and ``/tmp``,
its own ``/proc`` and a minimal ``/dev``; no network, no other process, an empty environment but
``PATH``/``HOME``/``LANG``, rlimits, no capabilities, NO_NEW_PRIVS and a seccomp filter. The
launcher kills the whole PID namespace at the end, so nothing it started survives.

``status``: ``ok`` (exit 0), ``exit`` (another exit code), ``signal``, ``timeout`` (the wall-clock
limit) or ``error``: the *sandbox* failed (no launcher, no user namespaces, a bad bind), which is
never the program's fault and must not be scored as a wrong answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

BIN_NAME = "r1mega-sandbox"
SYSTEM_RO = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/alternatives", "/etc/ld.so.cache",
             "/etc/ld.so.conf", "/etc/ld.so.conf.d")
"""Host paths every sandboxed program gets read-only (those that exist)."""


class SandboxUnavailable(RuntimeError):
    """The launcher is not built, or this machine cannot isolate a program (no user namespaces)."""


@dataclass(frozen=True)
class SandboxResult:
    status: str                 # ok | exit | signal | timeout | error
    exit_code: int              # the program's; 124 timeout; 128+N signal N; 125 sandbox error
    signal: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    isolated: bool
    error: str = ""
    files: dict = field(default_factory=dict)
    """The ``outputs`` the program left in /scratch: name -> bytes (a missing one is absent)."""

    @property
    def infrastructure_error(self) -> bool:
        """The sandbox, not the program, failed."""
        return self.status == "error"

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["files"] = sorted(self.files)
        return out


def launcher_path() -> str:
    """The launcher binary: ``$R1MEGA_SANDBOX_BIN``, the package's ``bin/``, ``PATH``, or the
    repository's ``build/``; :class:`SandboxUnavailable` naming how to build it otherwise."""
    env = os.environ.get("R1MEGA_SANDBOX_BIN")
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [env] if env else []
    candidates += [os.path.join(here, "bin", BIN_NAME), shutil.which(BIN_NAME),
                   os.path.join(os.path.dirname(os.path.dirname(here)), "build", BIN_NAME)]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise SandboxUnavailable(
        f"the sandbox launcher {BIN_NAME} is not built (looked in {', '.join(c for c in candidates if c)}); "
        "build it with `bash scripts/setup_env.sh`, or `cmake -S . -B build && cmake --build build` in the "
        "repository, or point R1MEGA_SANDBOX_BIN at it")


def prefix_of(command: str) -> str | None:
    """The install prefix of ``command`` (found on PATH, links resolved): ``/usr`` for
    ``/usr/bin/python3``, ``/root/.pyenv/versions/3.11.7`` for a pyenv Python; None if not found."""
    if os.sep in command and not os.path.isabs(command):
        return None  # ./prog: a file of /scratch
    found = shutil.which(command) if os.sep not in command else command
    if not found:
        return None
    real = os.path.realpath(found)
    return os.path.dirname(os.path.dirname(real))


def read_only_paths(argv: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The host paths bound read-only for ``argv``: the system directories, the prefix of the
    command and those of the commands it names through a pyenv shim, and ``extra``."""
    paths = [p for p in SYSTEM_RO if os.path.exists(p)]
    prefix = prefix_of(argv[0])
    if prefix and prefix != "/" and not any(prefix == p or prefix.startswith(p + "/") for p in paths):
        paths.append(prefix)
    for p in extra:
        ap = os.path.abspath(p)
        if ap not in paths:
            paths.append(ap)
    return paths


def resolve_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with its command as an absolute host path (the sandbox's PATH holds only the
    system directories, so ``python3`` from pyenv would not be found inside); ``./prog`` (a file
    of /scratch) as it is."""
    if os.sep in argv[0] and not os.path.isabs(argv[0]):
        return list(argv)
    found = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
    if not found:
        raise FileNotFoundError(f"sandbox: command {argv[0]!r} is not on PATH")
    return [os.path.realpath(found), *argv[1:]]


def run_sandboxed(argv: Sequence[str], *, stdin: bytes | str | None = None, files: dict[str, str | bytes] | None = None,
                  time_limit_s: float = 10.0, cpu_limit_s: float | None = None, memory_mb: int = 1024,
                  output_limit_bytes: int = 1 << 20, file_size_mb: int = 16, scratch_mb: int = 64, nproc: int = 64,
                  nofile: int = 64, read_only: Sequence[str] = (), outputs: Sequence[str] = (),
                  network: bool = False, unisolated: bool = False) -> SandboxResult:
    """Run ``argv`` in the sandbox (see the module docstring) and return what it did.

    ``files``: name -> contents (str or bytes) placed in ``/scratch`` first (executable when bytes
    start with ELF's magic: a binary compiled by an earlier run). ``outputs``: names of files in
    ``/scratch`` returned in ``SandboxResult.files`` (a compiled program). ``unisolated``: the
    documented, loud opt-out for machines without user namespaces (rlimits, output cap and the
    wall clock only). Raises :class:`SandboxUnavailable` when the launcher is missing."""
    binary = launcher_path()
    argv = resolve_command(argv)
    with tempfile.TemporaryDirectory(prefix="r1mega-sbx-") as tmp:
        os.chmod(tmp, 0o755)  # the launcher's init reads the files in as the namespace's (unmapped) user
        cmd = [binary, "--quiet", "--result", os.path.join(tmp, "result.json"), "--time-limit", str(time_limit_s),
               "--memory-mb", str(memory_mb), "--output-limit", str(output_limit_bytes),
               "--file-size-mb", str(file_size_mb), "--scratch-mb", str(scratch_mb), "--nproc", str(nproc),
               "--nofile", str(nofile)]
        if cpu_limit_s is not None:
            cmd += ["--cpu-limit", str(cpu_limit_s)]
        for path in read_only_paths(argv, read_only):
            cmd += ["--ro", path]
        for name, content in (files or {}).items():
            if os.sep in name or name in (".", ".."):
                raise ValueError(f"sandbox file name {name!r}: expected a plain file name")
            src = os.path.join(tmp, "in_" + name)
            data = content.encode() if isinstance(content, str) else content
            with open(src, "wb") as f:
                f.write(data)
            os.chmod(src, 0o755 if data[:4] == b"\x7fELF" else 0o644)
            cmd += ["--file", f"{src}:{name}"]
        if outputs:
            out_dir = os.path.join(tmp, "out")
            os.mkdir(out_dir)
            cmd += ["--output-dir", out_dir]
            for name in outputs:
                cmd += ["--output", name]
        if network:
            cmd.append("--network")
        if unisolated:
            cmd.append("--unisolated")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run([*cmd, "--", *argv], input=data if data is not None else b"",
                              capture_output=True, timeout=time_limit_s + 30)
        try:
            with open(os.path.join(tmp, "result.json")) as f:
                info = json.load(f)
        except (OSError, ValueError):
            info = {"status": "error", "exit_code": proc.returncode, "signal": 0, "wall_s": 0.0, "cpu_s": 0.0,
                    "max_rss_kb": 0, "stdout_truncated": False, "stderr_truncated": False,
                    "isolated": not unisolated, "error": proc.stderr.decode(errors="replace")[-2000:]}
        produced = {}
        for name in outputs:
            path = os.path.join(tmp, "out", name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    produced[name] = f.read()
    if info["status"] == "error" and not info.get("error"):
        info["error"] = proc.stderr.decode(errors="replace")[-2000:]
    return SandboxResult(status=info["status"], exit_code=int(info["exit_code"]), signal=int(info["signal"]),
                         wall_s=float(info["wall_s"]), cpu_s=float(info["cpu_s"]), max_rss_kb=int(info["max_rss_kb"]),
                         stdout=proc.stdout.decode(errors="replace"), stderr=proc.stderr.decode(errors="replace"),
                         stdout_truncated=bool(info["stdout_truncated"]), stderr_truncated=bool(info["stderr_truncated"]),
                         isolated=bool(info["isolated"]), error=str(info.get("error", "")), files=produced)
