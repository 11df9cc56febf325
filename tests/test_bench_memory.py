"""bench/lite_memory.py counts the whole process tree: a worker started from a thread other than the main
one (as the lite engine starts pocketsphinx's) is found and its resident memory added."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "lite_memory.py"

# a child that holds ~64 MB resident, then a grandchild of it; both sleep until killed
HOLDER = ("import subprocess, sys, time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); "
          "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print(g.pid, flush=True); time.sleep(60)")


def _bench():
    spec = importlib.util.spec_from_file_location("lite_memory_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_worker_started_from_another_thread_is_counted():
    bench = _bench()
    procs, started, done = [], threading.Event(), threading.Event()

    def start():  # the thread stays alive while the child runs (a dead thread's children go to the main one)
        procs.append(subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True))
        started.set()
        done.wait(30)

    t = threading.Thread(target=start)
    t.start()
    started.wait(10)
    child = procs[0]
    try:
        grandchild = int(child.stdout.readline())
        # the main thread's own children list does not hold it: the bug this walk fixes
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            assert child.pid not in [int(c) for c in f.read().split()]
        found = bench.descendants(os.getpid())
        assert child.pid in found and grandchild in found
        deadline = time.time() + 10
        while True:
            total, kids = bench._tree_rss_kb(os.getpid())
            if kids >= 64 * 1024 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert kids >= 64 * 1024, f"descendants hold {kids} KB, the child alone holds 64 MB"
        assert total >= kids + bench._rss_kb(os.getpid()) * 0.9
    finally:
        for pid in bench.descendants(child.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        child.kill()
        child.wait()
        done.set()
        t.join()


def test_a_forked_child_before_exec_is_not_counted_twice():
    """A fork shares its parent's pages (its VmRSS counts them again) until it calls exec."""
    bench = _bench()
    pid = os.fork()
    if pid == 0:  # the child: no exec, sleeps, exits without running the parent's cleanup
        time.sleep(5)
        os._exit(0)
    try:
        time.sleep(0.2)
        assert pid not in bench.descendants(os.getpid())
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
