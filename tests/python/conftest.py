import os
import sys

# The bindings are used from the build tree: PYTHONPATH=build/python (scripts/test.sh sets it).
if not any(os.path.isdir(os.path.join(p, "libprune")) for p in sys.path if p):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "build", "python"))
