"""pytest plugin (loaded by ``tests/conftest.py``): under CI, a golden or real-host test that is skipped
for a missing dependency fails instead.

CI is on when the environment has ``CI`` set to ``true``/``1``/``yes`` (what ``.ci/run`` gets). Which
tests count:

* golden tests: a module whose name contains ``golden``, or a test that uses the
  ``synthetic_checkpoints`` fixture (the official checkpoint layouts), or the goldens of
  ``tests/goldens/``; a module that mentions ``synthetic_checkpoints`` / ``goldens`` when it is
  skipped whole at import;
* real-host tests: a module named ``test_real_host*``, or a test marked ``real_host``;
* any test marked ``needs_all_dependencies``.

A skip is "for a missing dependency" when its reason says so: pytest.importorskip's "could not
import", "No module named", "not installed", "cannot import". Other skips (e.g. "this machine has
the files in its default folders") stay skips. Outside CI nothing changes.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

MISSING_DEPENDENCY = re.compile(r"could not import|no module named|not installed|cannot import|"
                                r"is not available|not importable", re.IGNORECASE)
GOLDEN_FIXTURES = {"synthetic_checkpoints", "official_goldens"}


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _module_counts(path: Path) -> bool:
    name = path.name
    if "golden" in name or name.startswith("test_real_host"):
        return True
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "synthetic_checkpoints" in text or "tests/goldens" in text or "GOLDENS" in text


def _item_counts(item) -> bool:
    if item.get_closest_marker("real_host") or item.get_closest_marker("needs_all_dependencies"):
        return True
    name = Path(str(item.fspath)).name
    if "golden" in name or name.startswith("test_real_host"):
        return True
    return bool(GOLDEN_FIXTURES & set(getattr(item, "fixturenames", ())))


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_host: runs against a real WebUI (must not skip under CI)")
    config.addinivalue_line("markers", "needs_all_dependencies: must not skip for a missing dependency "
                                       "under CI")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not (rep.skipped and ci_enabled()) or hasattr(rep, "wasxfail"):
        return
    reason = _reason(rep.longrepr)
    if MISSING_DEPENDENCY.search(reason) and _item_counts(item):
        rep.outcome = "failed"
        rep.longrepr = (f"{item.nodeid} was skipped for a missing dependency under CI ({reason}); "
                        f"CI must install it (install.py --neural --test)")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if not (rep.skipped and ci_enabled()):
        return
    path = Path(str(getattr(collector, "fspath", "") or ""))
    if not path.suffix == ".py" or not _module_counts(path):
        return
    reason = _reason(rep.longrepr)
    if MISSING_DEPENDENCY.search(reason):
        rep.outcome = "failed"
        rep.longrepr = (f"{path.name} was skipped whole for a missing dependency under CI ({reason}); "
                        f"CI must install it (install.py --neural --test)")
