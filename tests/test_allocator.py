"""keep_freed_memory: freed blocks stay in the process instead of going back to the kernel."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from trainers.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
import torch

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

before = rss_mb()
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so its pages are resident
held = rss_mb()
del block
print(applied, round(held - before), round(rss_mb() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_memory_is_kept_only_after_the_call():
    def run(mode):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True
        ).stdout.split()
        return out[0], int(out[1]), int(out[2])

    _, held, after_free = run("default")
    assert held >= 60 and after_free < 16  # glibc unmaps a large block on free
    applied, held, after_free = run("keep")
    assert applied == "True"
    assert held >= 60 and after_free >= 60  # the heap keeps it for the next step


def test_opt_out(monkeypatch):
    import trainers.allocator as allocator

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv("TRAINERS_KEEP_FREED_MEMORY", "0")
    assert allocator.keep_freed_memory() is False
