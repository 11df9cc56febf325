"""The real WebUI hosts (AUTOMATIC1111 v1.10.1 and Forge) for tests: build, scratch copy, install, start.

``../shared/hosts/build-hosts.sh`` builds both hosts with their venvs once per machine into
``~/.cache/sd-talking-head/hosts`` (``SADTALKER_HOSTS_DIR``). Every test run works on a scratch copy of a
host (``<cache>/hosts-runs/<kind>-<pid>``: the venv hard-linked, which pip and Python's byte-code writes
never modify in place, the WebUI folder copied, its big model files hard-linked), so the cached hosts
stay pristine and a rerun starts from the same state. The extension is installed the user's way: a
``git clone`` of the repository's HEAD into ``extensions/sd-talking-head``, its ``install.py`` run as the
WebUI runs it, then ``prepare_env.py`` (what a normal restart does: reinstall the host's pins, run the
extensions' installers again).

Also a command line for trying a host by hand::

    python tests/real_hosts.py a1111 [--port 7861] [--api-auth user:pass]   # prepare, install, start; Ctrl-C stops
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]


def _shared_hosts() -> Path:
    """``../shared/hosts`` beside the checkout (for a git worktree: beside its main checkout too)."""
    if os.environ.get("SADTALKER_HOSTS_SRC"):
        return Path(os.environ["SADTALKER_HOSTS_SRC"])
    candidates = [REPO.parent / "shared" / "hosts"]
    try:
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if common:
            candidates.append(Path(common).parent.parent / "shared" / "hosts")
    except (OSError, subprocess.SubprocessError):
        pass
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_HOSTS = _shared_hosts()
CACHE = Path(os.environ.get("SADTALKER_HOSTS_DIR", Path.home() / ".cache" / "sd-talking-head" / "hosts"))
#: scratch venvs: beside the cache (same file system: hard links)
RUNS = CACHE.parent / "hosts-runs"
#: scratch WebUI folders: gradio 3.41 answers 403 for every ``/file=`` under a folder whose name starts
#: with "." (``~/.cache``), so the WebUI itself must live elsewhere
WEBUI_RUNS = Path(os.environ.get("SADTALKER_HOSTS_RUNS", Path(tempfile.gettempdir()) / "sd-talking-head-hosts"))
EXT_NAME = "sd-talking-head"
BIG_FILE = 8 << 20  # files above this are hard-linked into a scratch copy, smaller ones copied

KINDS = {
    "a1111": dict(folder="webui", venv="venv-a1111", ckpt="models/Stable-diffusion/tiny-sd15.safetensors",
                  # random weights: some inputs give all-NaN latents, which A1111 would refuse (NansException)
                  args=["--use-cpu", "all", "--precision", "full", "--no-half", "--disable-nan-check"], loads_at_start=True),
    "forge": dict(folder="forge", venv="venv-forge", ckpt="models/Stable-diffusion/small-sd15.safetensors",
                  args=["--always-cpu"], loads_at_start=False),
}


class HostError(RuntimeError):
    """A host could not be built, installed into or started (the message says which step and why)."""


#: lines for the end of the pytest report (tests/conftest.py prints them): phase timings and figures
SUMMARY: List[str] = []


def log(msg: str, summary: bool = False) -> None:
    print(f"[real-hosts {time.strftime('%H:%M:%S')}] {msg}", flush=True)
    if summary:
        SUMMARY.append(msg)


@contextlib.contextmanager
def phase(name: str, timings: Optional[Dict[str, float]] = None):
    """Time one phase; prints its duration (and records it in ``timings``)."""
    t0 = time.monotonic()
    log(f"{name} ...")
    try:
        yield
    finally:
        dt = time.monotonic() - t0
        if timings is not None:
            key, i = name, 2
            while key in timings:
                key, i = f"{name} #{i}", i + 1
            timings[key] = dt
        log(f"{name}: {dt:.1f} s", summary=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"(no {path})"


def build_hosts(timeout: float = 3600) -> Path:
    """Run build-hosts.sh (idempotent: seconds when the cache is complete), under a lock so that two
    test runs never build at once. Returns the cache folder. Raises HostError when it fails."""
    script = SHARED_HOSTS / "build-hosts.sh"
    if not script.is_file():
        raise HostError(f"{script} not found: the real-host tests need ../shared/hosts (set SADTALKER_HOSTS_SRC)")
    CACHE.mkdir(parents=True, exist_ok=True)
    logfile = CACHE.parent / "build-hosts.log"
    with open(CACHE.parent / "build-hosts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(logfile, "w") as out:
            try:
                rc = subprocess.run(["bash", str(script), str(CACHE)], stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
    text = _tail(logfile, 100_000)
    if rc != 0 or "forge:" not in text:
        raise HostError(f"build-hosts.sh failed ({rc}); {logfile}:\n{text[-3000:]}")
    return CACHE


def _copy_tree(src: Path, dst: Path) -> None:
    def copy(s, d):
        if os.path.getsize(s) > BIG_FILE:
            try:
                os.link(s, d)
                return
            except OSError:  # another file system
                pass
        shutil.copy2(s, d)
    shutil.copytree(src, dst, symlinks=True, copy_function=copy)


@dataclass
class Host:
    """One scratch host: ``root`` (its WebUI folder), ``python`` (its venv), the running process."""

    kind: str
    run_dir: Path
    webui_dir: Path
    timings: Dict[str, float] = field(default_factory=dict)
    proc: Optional[subprocess.Popen] = None
    port: Optional[int] = None
    log_path: Optional[Path] = None
    starts: int = 0

    @property
    def root(self) -> Path:
        return self.webui_dir / KINDS[self.kind]["folder"]

    @property
    def venv(self) -> Path:
        return self.run_dir / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def extension(self) -> Path:
        return self.root / "extensions" / EXT_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SADTALKER_"))}
        env.update(HF_HOME=str(self.run_dir / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(self.venv),
                   PYTHONUNBUFFERED="1")
        return env

    # -- preparation -------------------------------------------------------------------------------
    @classmethod
    def scratch(cls, kind: str) -> "Host":
        """A fresh scratch copy of the cached ``kind`` host (see the module docstring)."""
        spec = KINDS[kind]
        run_dir = RUNS / f"{kind}-{os.getpid()}"
        webui_dir = WEBUI_RUNS / f"{kind}-{os.getpid()}"
        for d in (run_dir, webui_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        host = cls(kind, run_dir, webui_dir)
        with phase(f"{kind}: scratch copy", host.timings):
            subprocess.run(["cp", "-al", str(CACHE / spec["venv"]), str(host.venv)], check=True)
            _copy_tree(CACHE / spec["folder"], host.root)
            if (CACHE / "hf").is_dir():
                shutil.copytree(CACHE / "hf", run_dir / "hf", symlinks=True)
        return host

    def run(self, args: List[str], what: str, timeout: float = 1800, env: Optional[dict] = None,
            log_name: Optional[str] = None) -> str:
        """Run ``args`` in the WebUI folder with the host venv's environment; its output (also saved as
        ``run_dir/<log_name>``). Raises HostError with the output's tail when it fails."""
        out_path = self.run_dir / (log_name or (what.replace(" ", "-").replace("/", "-") + ".log"))
        with open(out_path, "w") as out:
            try:
                rc = subprocess.run(args, cwd=self.root, env=env or self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout after {timeout:.0f} s"
        text = out_path.read_text(errors="replace")
        if rc != 0:
            raise HostError(f"{self.kind}: {what} failed ({rc}); {out_path}:\n{text[-4000:]}")
        return text

    def clone_extension(self, repo: Path = REPO) -> str:
        """``git clone`` of ``repo``'s HEAD into ``extensions/sd-talking-head`` (what *Install from URL*
        does). Returns the commit."""
        with phase(f"{self.kind}: git clone of HEAD into extensions/", self.timings):
            subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(self.extension)],
                           check=True, stdout=subprocess.DEVNULL)
            head = subprocess.run(["git", "-C", str(self.extension), "rev-parse", "HEAD"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            log(f"note: {repo} has uncommitted changes; the hosts get its HEAD {head[:10]} (commit to test them)")
        return head

    def run_install_py(self) -> str:
        """The extension's install.py as the WebUI runs it at start-up (launch_utils.run_extension_installer:
        ``python install.py`` with the WebUI folder on PYTHONPATH)."""
        env = {**self.env(), "PYTHONPATH": str(self.root)}
        with phase(f"{self.kind}: install.py", self.timings):
            return self.run([str(self.python), str(self.extension / "install.py")], "install.py", env=env)

    def prepare_env(self, what: str = "the restart") -> str:
        """What a normal start does before the UI (../shared/hosts/prepare_env.py): the host's pins, then
        every extension's install.py."""
        with phase(f"{self.kind}: prepare_env.py ({what})", self.timings):
            text = self.run([str(self.python), str(SHARED_HOSTS / "prepare_env.py")], "prepare_env.py",
                            log_name=f"prepare_env-{len(self.timings)}.log")
        if "done" not in text.splitlines()[-1:] and "\ndone" not in text:
            raise HostError(f"{self.kind}: prepare_env.py did not finish:\n{text[-3000:]}")
        return text

    def freeze(self) -> Dict[str, str]:
        """``pip freeze --all`` of the host venv as {canonical name: version or the direct-URL line}."""
        text = self.run([str(self.python), "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
                        "pip freeze", log_name=f"freeze-{time.monotonic_ns()}.txt")
        out = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("WARNING"):
                continue
            if "==" in line:
                name, version = line.split("==", 1)
            elif " @ " in line:
                name, version = line.split(" @ ", 1)
            else:
                name, version = line, ""
            out[canon(name)] = version.strip()
        return out

    def module_owners(self) -> Dict[str, List[str]]:
        """{top-level importable name: [distributions whose RECORD installs it]} of the host venv."""
        code = r"""
import importlib.metadata as m, json, re
owners = {}
for d in m.distributions():
    name = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
    tops = set()
    for f in d.files or []:
        top = f.parts[0] if f.parts else ""
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".data", ".egg-info", ".libs", ".pth")):
            continue
        tops.add(top.split(".")[0] if len(f.parts) == 1 else top)
    for t in tops:
        owners.setdefault(t, set()).add(name)
print(json.dumps({k: sorted(v) for k, v in owners.items()}))
"""
        text = self.run([str(self.python), "-c", code], "module owners", log_name="module-owners.json")
        return json.loads(text.strip().splitlines()[-1])

    # -- start / stop ----------------------------------------------------------------------------------
    def start(self, extra_args: List[str] = (), timeout: float = 420) -> None:
        """Start the host on 127.0.0.1 (a free port) and wait until it answers; raises HostError (with the
        log's tail) when it exits or does not answer within ``timeout``."""
        if self.proc is not None:
            raise HostError("already running")
        spec = KINDS[self.kind]
        self.starts += 1
        self.port = free_port()
        self.log_path = self.run_dir / f"host-start{self.starts}.log"
        args = [str(self.python), "launch.py", "--skip-prepare-environment", "--no-download-sd-model", *spec["args"],
                "--api", "--server-name", "127.0.0.1", "--port", str(self.port), "--ckpt", spec["ckpt"],
                *extra_args]
        with phase(f"{self.kind}: start #{self.starts} {' '.join(extra_args)}".rstrip(), self.timings):
            out = open(self.log_path, "w")
            self.proc = subprocess.Popen(args, cwd=self.root, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            out.close()
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    rc = self.proc.returncode
                    self.proc = None
                    raise HostError(f"{self.kind} exited during start-up ({rc}); {self.log_path}:\n"
                                    f"{_tail(self.log_path)}")
                if "Startup time" in _tail(self.log_path, 10**7) and self._answers("/config"):
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise HostError(f"{self.kind} did not answer within {timeout:.0f} s; {self.log_path}:\n"
                                    f"{_tail(self.log_path)}")
                time.sleep(0.5)

    def wait_model(self, timeout: float = 300) -> None:
        """Until the host logged that its Stable Diffusion model is loaded (A1111 loads it after start-up
        in a thread; Forge loads it at the first generation: nothing to wait for)."""
        if not KINDS[self.kind]["loads_at_start"]:
            return
        deadline = time.monotonic() + timeout
        while "Model loaded in" not in self.log_text():
            if time.monotonic() > deadline:
                raise HostError(f"{self.kind}: the model did not load within {timeout:.0f} s:\n{_tail(self.log_path)}")
            if self.proc is None or self.proc.poll() is not None:
                raise HostError(f"{self.kind} exited:\n{_tail(self.log_path)}")
            time.sleep(0.5)

    def _answers(self, route: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + route, timeout=5) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def log_text(self) -> str:
        return _tail(self.log_path, 10**8) if self.log_path else ""

    def stop(self) -> None:
        """Stop the host's process group (SIGINT, as Ctrl-C; then SIGTERM, SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with phase(f"{self.kind}: stop", self.timings):
            for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def cleanup(self) -> None:
        self.stop()
        if os.environ.get("SADTALKER_KEEP_HOSTS"):
            log(f"kept {self.run_dir} and {self.webui_dir} (SADTALKER_KEEP_HOSTS)")
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.webui_dir, ignore_errors=True)


def canon(name: str) -> str:
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze_diff(before: Dict[str, str], after: Dict[str, str]) -> Dict[str, list]:
    """{"added": [name==version], "removed": [...], "changed": [name: a -> b]} between two freezes."""
    return {"added": sorted(f"{n}=={after[n]}" for n in after.keys() - before.keys()),
            "removed": sorted(f"{n}=={before[n]}" for n in before.keys() - after.keys()),
            "changed": sorted(f"{n}: {before[n]} -> {after[n]}" for n in before.keys() & after.keys()
                              if before[n] != after[n])}


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("--api-auth")
    args = ap.parse_args(argv)

    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started in the background (SIGINT ignored)
    build_hosts()
    host = Host.scratch(args.kind)
    try:
        host.clone_extension()
        before = host.freeze()
        host.run_install_py()
        host.prepare_env()
        print(json.dumps(freeze_diff(before, host.freeze()), indent=1))
        host.start(["--api-auth", args.api_auth] if args.api_auth else [])
        log(f"{args.kind} at {host.url} (log {host.log_path}); Ctrl-C stops")
        while host.proc and host.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        host.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
