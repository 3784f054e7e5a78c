"""How long checkpoint verification (the manifest's SHA-256 of every file) takes, side by side with
a plain read of the same bytes (the floor: any verification reads every byte once).

    python tools/bench_checkpoint_verify.py --gib 1 --files 8 [--dir /tmp] [--out benchmarks/results]

Writes a checkpoint-shaped directory of ``--files`` random files totalling ``--gib`` GiB, then
times: writing the manifest (at save), verifying it (at resume), and reading every file without
hashing. The page cache is warm after the first pass (the save just wrote the files too), so
the numbers are the CPU's hashing speed, the usual case for a resume right after a save; a cold
read from a network file system adds its read time to both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from r1mega.checkpoint.manifest import verify_manifest, write_manifest  # noqa: E402


def _read_all(root: str) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(8 << 20):
                    total += len(chunk)
    return total


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write the test checkpoint (default: the temp dir)")
    p.add_argument("--out", default=None, help="write checkpoint_verify.{json,md} here")
    a = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="r1mega-verify-", dir=a.dir)
    try:
        size = int(a.gib * (1 << 30)) // a.files
        os.makedirs(os.path.join(root, "model"))
        for i in range(a.files):
            with open(os.path.join(root, "model", f"__{i}_0.distcp"), "wb") as f:
                for _ in range(0, size, 64 << 20):
                    f.write(os.urandom(min(64 << 20, size - f.tell())))
        nbytes = _read_all(root)
        t_read = _best(lambda: _read_all(root), a.repeats)
        t_write = _best(lambda: write_manifest(root), a.repeats)
        t_verify = _best(lambda: verify_manifest(root), a.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    gib = nbytes / (1 << 30)
    res = {"bytes": nbytes, "files": a.files, "read_s": round(t_read, 3), "write_manifest_s": round(t_write, 3),
           "verify_s": round(t_verify, 3), "verify_GiB_per_s": round(gib / t_verify, 2),
           "verify_over_read": round(t_verify / t_read, 2), "cpu": platform.processor() or platform.machine(),
           "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            res["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"Checkpoint verification of {gib:.2f} GiB in {a.files} files (best of {a.repeats}, warm page cache)",
             "", "| pass | seconds | GiB/s | vs plain read |", "|---|---:|---:|---:|",
             f"| plain read (floor) | {t_read:.2f} | {gib / t_read:.2f} | 1.00x |",
             f"| write manifest (at save) | {t_write:.2f} | {gib / t_write:.2f} | {t_write / t_read:.2f}x |",
             f"| verify manifest (at resume) | {t_verify:.2f} | {gib / t_verify:.2f} | {t_verify / t_read:.2f}x |",
             "", f"Machine: {res['cpu']}, Python {res['python']}, one process (SHA-256 via hashlib/OpenSSL)."]
    print("\n".join(lines))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "checkpoint_verify.json"), "w") as f:
            json.dump(res, f, indent=2)
        with open(os.path.join(a.out, "checkpoint_verify.md"), "w") as f:
            f.write("\n".join(lines) + "\n\nCommand: `python tools/bench_checkpoint_verify.py --gib "
                    f"{a.gib:g} --files {a.files} --out {a.out}`\n")
    return res


if __name__ == "__main__":
    main()
