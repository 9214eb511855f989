"""The server hands freed native memory back to the OS: RSS falls after a thread's allocations are freed."""

import json
import subprocess
import sys
import textwrap

import pytest

from keras_vit.serving.native_heap import PeriodicRelease
from support import REPO, env

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

# A thread allocates 128 MB in 64 kB blocks (in its own glibc arena, below the mmap threshold) and frees all but
# every 100th: the arena's pages stay with the process until someone trims them.
FRAGMENT_AND_MEASURE = textwrap.dedent("""
    import json, sys, threading, time
    import numpy as np
    from keras_vit.serving.native_heap import PeriodicRelease, release_free_memory

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    kept = []
    def allocate_and_free():
        blocks = [np.ones(8192) for _ in range(2048)]
        kept.extend(blocks[::100])

    periodic = PeriodicRelease(float(sys.argv[1]))
    periodic.start()
    thread = threading.Thread(target=allocate_and_free)
    thread.start()
    thread.join()
    freed = rss_mb()
    if periodic.thread is not None:
        time.sleep(4 * periodic.interval_seconds)
        after = rss_mb()
    else:
        release_free_memory()
        after = rss_mb()
    periodic.stop()
    print(json.dumps({"freed": freed, "after": after}))
""")


def fragmented_rss(interval: float) -> dict:
    out = subprocess.run([sys.executable, "-c", FRAGMENT_AND_MEASURE, str(interval)], cwd=REPO, env=env(),
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
@pytest.mark.parametrize("interval", [0.0, 0.25], ids=["after an unload", "periodically"])
def test_freed_memory_goes_back_to_the_os(interval):
    rss = fragmented_rss(interval)
    assert rss["freed"] - rss["after"] > 60, rss  # of the ~126 MB freed


def test_a_negative_interval_is_refused_by_its_flag_name():
    with pytest.raises(ValueError, match="--release_memory_seconds"):
        PeriodicRelease(-1)
