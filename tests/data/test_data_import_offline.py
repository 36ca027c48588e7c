"""Importing the data pipeline makes no network request (albumentations' update check is off)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import socket
calls = []
real = socket.getaddrinfo
def counting(*args, **kwargs):
    calls.append(args[0])
    return real(*args, **kwargs)
socket.getaddrinfo = counting
import siglip2_dense.data.augmentations
print(len(calls), os.environ.get("NO_ALBUMENTATIONS_UPDATE"))
"""


def test_importing_the_augmentations_looks_up_no_host():
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", "import os\n" + PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["0", "1"], out.stdout + out.stderr
