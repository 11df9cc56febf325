"""A throw-away single-node Ray cluster on 127.0.0.1, for tests and benchmarks.

``ray start --head --block`` in its own session, every port chosen free (GCS, dashboard and its
agent, metrics, node/object managers, runtime-env agent, worker ports), a small
object store and its own temp folder, so that several such clusters (and a user's own) can run on
one machine. :meth:`LocalCluster.stop` ends exactly the processes of that session by their PIDs
(``ray stop`` would end every Ray cluster of the machine).

In a venv with pydantic 1 (the WebUI's, and the test venv that mirrors it) Ray's dashboard agent
refuses to start ("Pydantic v1 is no longer supported in Ray") and the raylet dies with it; minimal
Ray runs without pydantic, so the cluster's processes get a ``PYTHONPATH`` entry where
``import pydantic`` fails (:func:`pydantic_shadow`). The driver never imports those modules.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set for the head (and by the backend for the driver):
without it, on some machines ``--node-ip-address 127.0.0.1`` is replaced by the eth0 address.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def free_range(count: int, lo: int = 20000, hi: int = 60000) -> int:
    """First port of ``count`` consecutive ports free on 127.0.0.1."""
    import random
    rnd = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        base = rnd.randrange(lo, hi - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range for Ray workers")


def pydantic_v1_installed() -> bool:
    """True when the installed pydantic is 1.x (checked without importing it)."""
    from importlib import metadata
    try:
        return metadata.version("pydantic").split(".")[0] == "1"
    except metadata.PackageNotFoundError:
        return False


def pydantic_shadow(folder: str | Path) -> Path:
    """A folder holding a ``pydantic`` package whose import raises ImportError (see module docstring)."""
    pkg = Path(folder) / "pydantic-shadow" / "pydantic"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        'raise ImportError("pydantic 1.x is hidden from this Ray cluster (Ray needs pydantic>=2 or none)")\n')
    return pkg.parent


def _session_pids(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6: session id; skip zombies
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


class LocalCluster:
    """``with LocalCluster(num_cpus=2) as c: run_ray(..., address=c.address)``."""

    def __init__(self, num_cpus: int = 2, num_gpus: int = 0, object_store_bytes: int = 120 * 2**20,
                 start_timeout_s: float = 180.0):
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.object_store_bytes = object_store_bytes
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.temp_dir = ""

    def start(self) -> "LocalCluster":
        (gcs, dash, agent, agent_grpc, metrics, node_mgr, obj_mgr, rt_env) = free_ports(8)
        wbase = free_range(24)
        self.temp_dir = tempfile.mkdtemp(prefix="thray-", dir="/tmp")  # short: Ray's socket paths
        cmd = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())",
               "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
               "--num-cpus", str(self.num_cpus), "--num-gpus", str(self.num_gpus),
               "--include-dashboard", "false", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
               "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--node-manager-port", str(node_mgr),
               "--object-manager-port", str(obj_mgr), "--runtime-env-agent-port", str(rt_env),
               "--min-worker-port", str(wbase),
               "--max-worker-port", str(wbase + 23), "--object-store-memory", str(self.object_store_bytes),
               "--temp-dir", self.temp_dir, "--disable-usage-stats", "--log-style", "record"]
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        if pydantic_v1_installed():
            env["PYTHONPATH"] = os.pathsep.join(
                [str(pydantic_shadow(self.temp_dir))] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.address = f"127.0.0.1:{gcs}"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text, rc = self.log_path.read_text()[-3000:], self.proc.returncode
                self.stop()
                raise RuntimeError(f"ray start exited with {rc}: {text}")
            if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        text = self.log_path.read_text()[-3000:]
        self.stop()
        raise RuntimeError(f"the Ray head did not start in {self.start_timeout_s:.0f} s: {text}")

    def pids(self) -> list[int]:
        """PIDs of every process of the cluster (its session), the head's command included."""
        return _session_pids(self.proc.pid) if self.proc is not None else []

    def stop(self, grace_s: float = 5.0) -> None:
        """End the cluster's processes: SIGTERM, then SIGKILL for those left after ``grace_s``."""
        if self.proc is None:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.pids():
            self.proc.poll()
            time.sleep(0.2)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        if not os.environ.get("TALKING_HEAD_KEEP_RAY_LOGS"):
            import shutil
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


__all__ = ["LocalCluster", "free_ports", "free_range"]
