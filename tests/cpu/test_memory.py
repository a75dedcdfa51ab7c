"""The malloc tuning: big tensors come from the process's heap, not from fresh mappings freed on release."""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
import torch
from worldmodels.cpu.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.sbrk.restype = ctypes.c_void_p
x = torch.empty(16 << 20)  # 64 MB, far above glibc's default mmap threshold
print(applied, x.data_ptr() < libc.sbrk(0))  # below the program break: carved from the heap
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keep_freed_memory_serves_big_tensors_from_the_heap():
    def run(mode: str) -> tuple[bool, bool]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
        return out[0] == "True", out[1] == "True"

    applied, in_heap = run("keep")
    if not applied:
        pytest.skip("not glibc")
    assert in_heap
    assert run("plain") == (False, False)  # by default glibc maps it separately and unmaps it on free
