"""Run a snippet in a fresh Python under an address-space limit and report its peak resident memory.

Memory-bomb tests use it: the limit keeps a regression from taking the machine's memory (it fails
with MemoryError instead), and the peak shows that a refusal came before the payload was read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

LIMIT = 1536 << 20  # address space for the child: enough for Python and NumPy, not for a bomb


def peak_rss(code: str, limit: int = LIMIT) -> tuple[str, int]:
    """(the error ``code`` raised, as "Type: message", or "" if none; the child's peak RSS in MiB)."""
    script = f"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
try:
{textwrap.indent(textwrap.dedent(code), "    ")}
    error = ""
except BaseException as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps([error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024]))
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # Linux carries the peak RSS of the memory a process execs from into ru_maxrss, and subprocess
    # spawns with vfork, so a child of pytest starts at pytest's peak: a small Python in between resets it.
    relay = "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1]]).returncode)"
    # (from a neutral folder: `python -c` imports from its working folder first, and the repository's
    # own backprop/ folder is not the installed package when the tests run against a wheel)
    done = subprocess.run([sys.executable, "-c", relay, script], capture_output=True, text=True, timeout=300,
                          env=env, check=True, cwd=tempfile.gettempdir())
    error, mib = json.loads(done.stdout.strip().splitlines()[-1])
    return error, mib


def gzip_bomb(path: Path, head: bytes, zeros: int) -> Path:
    """Write ``head`` then ``zeros`` zero bytes to ``path`` as gzip, streamed (about 1 MB per 230 MB)."""
    packer, block = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(packer.compress(head))
        for start in range(0, zeros, len(block)):
            f.write(packer.compress(block[: zeros - start]))
        f.write(packer.flush())
    return path
