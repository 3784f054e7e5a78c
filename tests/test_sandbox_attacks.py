"""Hostile programs against the code sandbox (csrc/sandbox, r1mega.sandbox.run), each checked from
*outside* the sandbox: processes left on the host (``pgrep`` for a marker the program carries), files
on the host, a listener the test opens, the test process itself, its environment and its memory.

After every attack a trivial program must run at once: the sandbox serves the next sample.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from r1mega.sandbox.run import launcher_path, run_sandboxed
from tests.sandbox_support import needs_userns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = needs_userns


def test_the_launcher_is_built():
    assert os.access(launcher_path(), os.X_OK)


@pytest.fixture
def marker():
    """A string the hostile program carries in its argv, so the host can look for its processes."""
    return "r1mega_attack_" + uuid.uuid4().hex[:12]


def _host_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _next_sample_is_served():
    t0 = time.monotonic()
    res = run_sandboxed(["python3", "-c", "print(6 * 7)"], time_limit_s=5)
    assert (res.status, res.stdout) == ("ok", "42\n"), res
    assert time.monotonic() - t0 < 3.0


def py(code: str, marker: str, **kw):
    kw.setdefault("time_limit_s", 2.0)
    return run_sandboxed(["python3", "-c", f"# {marker}\n{code}", marker], **kw)


def cpp(src: str, marker: str, stdin: str = "", **kw):
    build = run_sandboxed(["g++", "-O1", "-o", "prog", "prog.cpp"], files={"prog.cpp": src}, outputs=["prog"],
                          time_limit_s=30, memory_mb=2048)
    assert build.status == "ok", build.stderr
    kw.setdefault("time_limit_s", 2.0)
    return run_sandboxed(["./prog", marker], files={"prog": build.files["prog"]}, stdin=stdin, **kw)


def _contained(res, marker):
    assert res.status != "error", res.error
    assert not _host_processes(marker), _host_processes(marker)
    _next_sample_is_served()


# ----------------------------------------------------------------------------------- resources
def test_fork_bomb(marker):
    t0 = time.monotonic()
    res = py("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", marker)
    assert res.status == "timeout" and time.monotonic() - t0 < 6
    _contained(res, marker)


def test_fork_bomb_cpp(marker):
    res = cpp("#include <unistd.h>\nint main(){ for(;;) fork(); }", marker)
    assert res.status == "timeout"
    _contained(res, marker)


def test_memory_bomb(marker):
    res = py("x = bytearray(8 << 30)\nprint('allocated')", marker, memory_mb=512)
    assert res.status == "exit" and "MemoryError" in res.stderr and "allocated" not in res.stdout
    _contained(res, marker)


def test_memory_bomb_cpp_touching_pages(marker):
    src = ("#include <cstdlib>\n#include <cstring>\n#include <cstdio>\nint main(){ for(int i=0;;i++){ char* p=(char*)"
           "malloc(64<<20); if(!p){ puts(\"refused\"); return 3;} memset(p,1,64<<20);} }")
    res = cpp(src, marker, memory_mb=256)
    assert res.status == "exit" and res.exit_code == 3 and res.max_rss_kb < 300 * 1024, res
    _contained(res, marker)


def test_cpu_spin_is_stopped_at_the_wall_clock_limit(marker):
    t0 = time.monotonic()
    res = py("while True: pass", marker, time_limit_s=1.0)
    assert res.status == "timeout" and res.exit_code == 124 and 0.9 < res.wall_s < 2.0
    assert time.monotonic() - t0 < 4
    _contained(res, marker)


def test_cpu_spin_is_stopped_at_the_cpu_time_limit(marker):
    res = py("while True: pass", marker, cpu_limit_s=1.0, time_limit_s=10.0)
    assert res.status == "timeout" and res.exit_code == 124 and res.cpu_s >= 0.9 and res.wall_s < 5.0, res
    _contained(res, marker)


def test_a_fork_bomb_beside_does_not_fail_a_correct_program(marker):
    """Sandboxes share the CPUs (no cgroups): a fork bomb in one slows a program in the next pool
    worker many times over. The code reward's verdict is CPU time (its wall clock is 3x + 1 s), so
    the correct program still passes every test."""
    import threading

    from r1mega.rewards.code import code_reward
    from r1mega.rewards.config import RewardConfig

    bomb = threading.Thread(target=py, args=("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
                                             marker), kwargs=dict(time_limit_s=6.0))
    bomb.start()
    time.sleep(0.5)  # the bomb is at its process limit, every process spinning
    cfg = RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=1.0, code_budget_s=30)
    tests = {"input_output": {"inputs": [f"{i} {i + 1}\n" for i in range(4)], "outputs": [f"{2 * i + 1}\n" for i in range(4)]}}
    got = code_reward("```python\na, b = map(int, input().split())\nprint(a + b)\n```", None, tests, cfg)
    bomb.join()
    assert got.score == 1.0, got.info
    assert not _host_processes(marker)


def test_cpu_spin_cpp(marker):
    res = cpp("int main(){ volatile long x=0; for(;;) x++; }", marker, time_limit_s=1.0)
    assert res.status == "timeout"
    _contained(res, marker)


def test_sleep_past_the_limit(marker):
    res = py("import time\ntime.sleep(60)", marker, time_limit_s=1.0)
    assert res.status == "timeout" and res.wall_s < 2.0
    _contained(res, marker)


def test_gigabytes_of_output_are_capped(marker):
    t0 = time.monotonic()
    res = py("import sys\nb = 'x' * (1 << 20)\nwhile True: sys.stdout.write(b)", marker, output_limit_bytes=65536)
    assert res.stdout_truncated and len(res.stdout) == 65536 and time.monotonic() - t0 < 6
    _contained(res, marker)


def test_stderr_flood_is_capped(marker):
    res = py("import os\nfor _ in range(4096): os.write(2, b'e' * (1 << 20))", marker, output_limit_bytes=1000)
    assert res.stderr_truncated and len(res.stderr) == 1000
    _contained(res, marker)


def test_too_many_open_files(marker):
    res = py("fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\nexcept OSError as e: print(len(fs), e.errno)",
             marker, nofile=32)
    n, errno_ = map(int, res.stdout.split())
    assert n < 32 and errno_ == 24
    _contained(res, marker)


def test_huge_file_stops_at_the_file_size_limit(marker):
    res = py("f = open('big', 'wb')\ntry:\n    while True: f.write(b'x' * (1 << 20)); f.flush()\n"
             "except OSError as e: print('stopped', e.errno)", marker, file_size_mb=8)
    assert res.stdout.strip() in ("stopped 27", "stopped 28"), res  # EFBIG, or ENOSPC of the scratch tmpfs
    _contained(res, marker)


def test_many_small_files_fill_only_the_scratch_tmpfs(marker):
    res = py("i = 0\ntry:\n    while True:\n        open(f'f{i}', 'wb').write(b'x' * 65536); i += 1\n"
             "except OSError as e: print('stopped', e.errno)", marker, scratch_mb=8, time_limit_s=5)
    assert res.stdout.strip() == "stopped 28", res  # ENOSPC inside the sandbox, the host's disk untouched
    _contained(res, marker)


def test_thread_bomb(marker):
    res = py("import threading, time\nts = []\ntry:\n    while True:\n        t = threading.Thread(target=time.sleep, "
             "args=(30,)); t.start(); ts.append(t)\nexcept RuntimeError: print('limited', len(ts), flush=True)\nimport os\nos._exit(0)",
             marker, nproc=32)
    assert res.stdout.startswith("limited")
    _contained(res, marker)


# ------------------------------------------------------------------------------- the host, read
def test_no_network_even_to_a_local_listener(marker):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(0.5)
        port = srv.getsockname()[1]
        res = py(f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1); print('CONNECTED')\n"
                 "except OSError as e: print('refused', e.errno)", marker)
        with pytest.raises(socket.timeout):
            srv.accept()  # nothing arrived
    assert res.stdout.startswith("refused") and "CONNECTED" not in res.stdout
    _contained(res, marker)


def test_no_outside_network(marker):
    res = py("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n"
             "    s.sendto(b'x', ('8.8.8.8', 53)); print('SENT')\nexcept OSError as e: print('unreachable', e.errno)", marker)
    assert res.stdout.startswith("unreachable")
    _contained(res, marker)


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/passwd", os.path.join(REPO, "README.md"),
                                  os.path.expanduser("~/.bashrc"), "/proc/{ppid}/environ", "/dev/mem"])
def test_files_outside_the_scratch_directory_are_not_readable(marker, path):
    path = path.format(ppid=os.getpid())
    res = py(f"try:\n    print('READ', open({path!r}, 'rb').read(64))\nexcept OSError as e: print('denied', e.errno)", marker)
    assert res.stdout.startswith("denied"), res.stdout
    _contained(res, marker)


def test_the_parents_environment_is_not_visible(marker, monkeypatch):
    monkeypatch.setenv("R1MEGA_TEST_SECRET", "hunter2-" + marker)
    res = py("import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ','rb').read())", marker)
    assert "hunter2" not in res.stdout and "R1MEGA_TEST_SECRET" not in res.stdout
    _contained(res, marker)


def test_host_processes_are_invisible(marker):
    res = py("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", marker)
    pids = eval(res.stdout)  # noqa: S307 - the sandbox's own list of ints
    assert pids and max(pids) < 50 and os.getpid() not in pids or len(pids) < 5, pids
    _contained(res, marker)


# ------------------------------------------------------------------------------ the host, write
def test_writing_outside_the_scratch_directory(marker):
    host_tmp = f"/tmp/{marker}_escaped"
    res = py(f"import os\nfor p in ['/usr/{marker}', '/etc/{marker}', {host_tmp!r}, '/{marker}']:\n"
             "    try: open(p, 'w').write('x'); print('wrote', p)\n    except OSError as e: print('denied', p, e.errno)",
             marker)
    assert not os.path.exists(host_tmp) and not os.path.exists(f"/usr/{marker}") and not os.path.exists(f"/{marker}")
    assert f"denied /usr/{marker}" in res.stdout and f"denied /etc/{marker}" in res.stdout
    _contained(res, marker)


def test_an_output_symlink_does_not_leak_a_file(marker):
    res = run_sandboxed(["python3", "-c", f"# {marker}\nimport os\nos.symlink('/etc/passwd', 'out')"], outputs=["out"],
                        time_limit_s=2)
    assert "out" not in res.files  # read with O_NOFOLLOW: a link is not a file
    _contained(res, marker)


# --------------------------------------------------------------------------- other processes
def test_double_fork_daemon_does_not_survive(marker):
    res = py("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
             "        os.closerange(0, 3)\n        time.sleep(120)\n    os._exit(0)\nprint('parent done')", marker)
    assert res.status == "ok" and "parent done" in res.stdout
    time.sleep(0.2)
    assert not _host_processes(marker), _host_processes(marker)
    _contained(res, marker)


def test_signalling_the_parent_and_everything(marker):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        res = py(f"import os, signal\nfor pid in ({os.getpid()}, {victim.pid}, os.getppid(), 1, -1):\n"
                 "    try: os.kill(pid, signal.SIGKILL); print('sent', pid)\n"
                 "    except OSError as e: print('no', pid, e.errno)", marker)
        time.sleep(0.2)
        assert victim.poll() is None  # alive
        assert f"no {victim.pid}" in res.stdout and f"no {os.getpid()}" in res.stdout
    finally:
        victim.kill()
    _contained(res, marker)


def test_ptrace_of_the_parent(marker):
    res = py(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.ptrace(16, {os.getpid()}, 0, 0)\n"
             "print(r, ctypes.get_errno())", marker)
    r, err = map(int, res.stdout.split())
    assert r == -1 and err in (1, 3)  # EPERM (seccomp) or ESRCH (not visible)
    _contained(res, marker)


def test_new_namespaces_and_mounts_are_refused(marker):
    res = py("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
             "print(libc.unshare(0x10000000), ctypes.get_errno())\n"           # CLONE_NEWUSER
             "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())", marker)
    assert res.stdout.split() == ["-1", "1", "-1", "1"], res
    _contained(res, marker)


def test_cpp_reads_of_host_secrets(marker):
    src = ('#include <cstdio>\nint main(){ const char* ps[]={"/etc/shadow","/root/.bashrc","/proc/1/environ"};'
           'for(auto p: ps){ FILE* f=fopen(p,"r"); printf("%s %s\\n", p, f? "READ":"denied"); } }')
    res = cpp(src, marker)
    assert "READ" not in res.stdout and res.stdout.count("denied") == 3, res.stdout
    _contained(res, marker)
