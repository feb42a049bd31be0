"""The .pyi stubs match the built module (mypy's stubtest, from Debian's python3-mypy) and catch
misuse; they ship with py.typed."""
import os
import subprocess
import sys

import libprune

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(os.path.abspath(libprune.__file__))
CONFIG = os.path.join(HERE, "mypy.ini")
ALLOWLIST = os.path.join(HERE, "..", "..", "bindings", "stubtest_allowlist.txt")


def _mypy(*args):
    env = dict(os.environ, MYPYPATH=os.path.dirname(PACKAGE))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(PACKAGE), timeout=600)


def test_stubs_and_py_typed_ship_with_the_package():
    assert os.path.exists(os.path.join(PACKAGE, "__init__.pyi"))
    assert os.path.exists(os.path.join(PACKAGE, "py.typed"))


def test_stubtest_finds_the_stubs_consistent_with_the_module():
    result = _mypy("mypy.stubtest", "libprune", "--mypy-config-file", CONFIG, "--allowlist", ALLOWLIST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_typical_use_type_checks_and_misuse_does_not():
    ok = _mypy("mypy", "--config-file", CONFIG, os.path.join(HERE, "stub_checks", "usage.py"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _mypy("mypy", "--config-file", CONFIG, os.path.join(HERE, "stub_checks", "misuse.py"))
    marked = [i + 1 for i, line in enumerate(open(os.path.join(HERE, "stub_checks", "misuse.py"))) if "# error:" in line]
    reported = sorted({int(line.split(":")[1]) for line in bad.stdout.splitlines() if ": error:" in line})
    assert reported == marked, bad.stdout
