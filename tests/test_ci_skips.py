"""The CI rule of tests/ci_skips.py, run on throw-away test files in a fresh pytest process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

FILES = {
    "conftest.py": """
        import pytest
        from ci_skips import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport

        @pytest.fixture
        def synthetic_checkpoints():
            pytest.importorskip("no_such_module_for_ci_skips")
        """,
    "test_whole_module_golden.py": """
        import pytest
        pytest.importorskip("no_such_module_for_ci_skips")

        def test_never():
            pass
        """,
    "test_uses_checkpoints.py": """
        import pytest

        def test_with_checkpoints(synthetic_checkpoints):
            pass

        def test_plain_dependency_skip():
            pytest.importorskip("no_such_module_for_ci_skips")

        @pytest.mark.needs_all_dependencies
        def test_other_reason():
            pytest.skip("this machine has the files in its default folders")

        @pytest.mark.real_host
        def test_host():
            pytest.skip("the WebUI is not installed here")

        def test_ok():
            pass
        """,
}


def _run(tmp_path: Path, ci: str | None, only=None):
    for name, text in FILES.items():
        if only is not None and name not in only and name != "conftest.py":
            continue
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_dependency_skips_of_golden_and_host_tests_fail_under_ci(tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    p = _run(whole, "true", only={"test_whole_module_golden.py"})
    assert p.returncode != 0, p.stdout
    assert "test_whole_module_golden.py was skipped whole for a missing dependency under CI" in p.stdout
    tests = tmp_path / "tests"
    tests.mkdir()
    p = _run(tests, "true", only={"test_uses_checkpoints.py"})
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "test_with_checkpoints was skipped for a missing dependency under CI" in out
    assert "test_host was skipped for a missing dependency under CI" in out
    # a plain test's dependency skip and a golden test's skip for another reason stay skips
    assert "1 failed, 1 passed, 2 skipped, 1 error" in out, out  # the fixture skip: an error in setup


def test_outside_ci_they_stay_skips(tmp_path):
    p = _run(tmp_path, None)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "1 passed, 5 skipped" in out, out
    p = _run(tmp_path, "false")
    assert p.returncode == 0 and "1 passed, 5 skipped" in p.stdout, p.stdout
