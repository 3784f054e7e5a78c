"""Checkpoint manifests: the size and SHA-256 of every file, so a damaged checkpoint is never loaded.

    write_manifest(tmp_dir)          # after every file is written and fsynced, before COMPLETE
    verify_manifest(step_dir)        # raises ManifestError naming the first bad file

``manifest.json`` maps each file's path relative to the checkpoint (``/``-separated) to
``{"bytes": n, "sha256": hex}``. It covers every file except itself and the ``COMPLETE``
marker, which the commit writes after it. A file missing, of another size (truncated or
grown) or with another digest (flipped bytes) fails verification; files the manifest does not
list are not checked (a user's notes beside the checkpoint do no harm).

Cost: one sequential read of the checkpoint. SHA-256 runs at the disk's or the CPU's speed,
whichever is lower (``benchmarks/checkpoint_verify.py`` measures it on a 1 GB checkpoint).
Pure Python (hashlib, json): no torch import.
"""

from __future__ import annotations

import hashlib
import json
import os

MANIFEST = "manifest.json"
_SKIP = {MANIFEST, "COMPLETE"}
_CHUNK = 8 << 20


class ManifestError(ValueError):
    """A checkpoint file is missing, truncated or damaged; the message names it."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel not in _SKIP:
                out.append(rel)
    return sorted(out)


def build_manifest(root: str) -> dict:
    """``{relative path: {"bytes": n, "sha256": hex}}`` for every file under ``root``."""
    return {"files": {rel: {"bytes": os.path.getsize(os.path.join(root, rel)),
                            "sha256": file_sha256(os.path.join(root, rel))} for rel in _files(root)}}


def write_manifest(root: str) -> dict:
    """Hash every file under ``root`` and write ``manifest.json`` (fsynced) beside them."""
    manifest = build_manifest(root)
    with open(os.path.join(root, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    return manifest


def read_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: the checkpoint cannot be verified") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} is unreadable ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{path}: expected {{\"files\": {{path: {{bytes, sha256}}}}}}")
    return manifest


def verify_manifest(root: str) -> int:
    """Check every file the manifest lists (size first, then SHA-256); returns the bytes read.

    Raises :class:`ManifestError` naming the first missing, resized or damaged file.
    """
    total = 0
    for rel, want in sorted(read_manifest(root)["files"].items()):
        path = os.path.join(root, *rel.split("/"))
        if not os.path.isfile(path):
            raise ManifestError(f"{path} is missing (listed in {MANIFEST})")
        size = os.path.getsize(path)
        if size != want.get("bytes"):
            raise ManifestError(f"{path} is {size} bytes, {MANIFEST} says {want.get('bytes')} (truncated or "
                                f"overwritten)")
        if file_sha256(path) != want.get("sha256"):
            raise ManifestError(f"{path} is damaged: its SHA-256 differs from the one in {MANIFEST}")
        total += size
    return total
