"""examples/checkout.py runs as the README says and checks itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def test_checkout_example_commits_once(server):
    env = {**os.environ, "STOCKRAFT_SERVER": server.address,
           "PYTHONPATH": str(HERE / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(HERE / "examples" / "checkout.py")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "on_hand 5 -> 2" in out
    assert "commit ORDER-" in out and ": COMMITTED" in out
    assert "INSUFFICIENT_STOCK" in out and "asked 3, available 2" in out
    assert "checkout applied exactly once" in out
