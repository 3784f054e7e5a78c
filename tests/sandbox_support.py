"""Whether this machine's kernel lets the code sandbox isolate a program (user namespaces).

Tests that run programs in the sandbox skip, naming the kernel's refusal, where it does not; a
launcher that is missing is not a reason to skip (scripts/setup_env.sh builds it): they fail."""

from __future__ import annotations

import pytest

from r1mega.sandbox.run import SandboxUnavailable, run_sandboxed


def _refusal() -> str | None:
    try:
        res = run_sandboxed(["true"], time_limit_s=5)
    except SandboxUnavailable:
        return None
    if res.status == "error" and "namespaces" in res.error:
        return res.error
    return None


REFUSED = _refusal()
needs_userns = pytest.mark.skipif(REFUSED is not None, reason=f"this kernel refuses user namespaces: {REFUSED}")
