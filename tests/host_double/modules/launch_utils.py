"""Double of ``modules/launch_utils.py``: ``is_installed`` and ``run_pip`` (recorded, never runs pip).

``HOST_DOUBLE_MISSING`` (comma-separated names) makes ``is_installed`` report those as missing (and,
with ``HOST_DOUBLE_ONLY_MISSING`` set, every other name as installed);
each ``run_pip`` call is appended to ``double_pip_calls`` and, when ``HOST_DOUBLE_PIP_LOG`` names a
file, written there as a JSON line (the WebUI runs an extension's install.py as a subprocess).
"""
import importlib.metadata
import importlib.util
import json
import os

double_pip_calls = []


def _missing():
    return {n.strip() for n in os.environ.get("HOST_DOUBLE_MISSING", "").split(",") if n.strip()}


def is_installed(package):
    if package in _missing():
        return False
    if os.environ.get("HOST_DOUBLE_ONLY_MISSING"):  # everything else counts as installed
        return True
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run_pip(command, desc=None, live=False):
    double_pip_calls.append((command, desc))
    log = os.environ.get("HOST_DOUBLE_PIP_LOG")
    if log:
        with open(log, "a", encoding="utf8") as f:
            f.write(json.dumps({"command": command, "desc": desc}) + "\n")
    return ""
