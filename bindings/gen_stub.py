#!/usr/bin/env python3
"""Writes libprune/__init__.pyi from __init__.pyi.in, filling the option keywords and attributes of
PrunerOptions, prune, Pruner, ScheduleOptions and Schedule from the C++ option lists of the built
module, so the stub cannot lag an option added to a list.

  PYTHONPATH=build/python /usr/bin/python3 bindings/gen_stub.py TEMPLATE OUTPUT
"""
import os
import sys

# This script sits beside the package's sources, which would shadow the built package.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
from libprune import _libprune  # noqa: E402

# options::describe's type names as annotations: (keyword argument, attribute).
TYPES = {
    "a boolean": ("bool", "bool"),
    "an integer": ("int", "int"),
    "a number": ("float", "float"),
    "a string": ("str", "str"),
    "an array of strings": ("Sequence[str]", "List[str]"),
    "an array of integers": ("Sequence[int]", "List[int]"),
    "an object of ratios": ("Mapping[str, float]", "Dict[str, float]"),
}
# prune() and Pruner() also take the modules themselves as ignored_layers (their names are looked up).
KEYWORD_OVERRIDES = {"ignored_layers": "_Layers"}


def keywords(options, indent, skip=(), modules=False):
    """One keyword a line, each under the first; `modules`: where ignored_layers takes modules too."""
    overrides = KEYWORD_OVERRIDES if modules else {}
    parts = [f"{name}: {overrides.get(name, TYPES[kind][0])} = ..."
             for name, _, _, kind in options._defaults() if name not in skip]
    return (",\n" + " " * indent).join(parts)


def attributes(options):
    return "\n".join(f"    {name}: {TYPES[kind][1]}" for name, _, _, kind in options._defaults())


def main(template, output):
    text = open(template).read()
    pruner, schedule = _libprune.PrunerOptions, _libprune.ScheduleOptions
    for key, value in (("@PRUNER_ATTRIBUTES@", attributes(pruner)), ("@SCHEDULE_ATTRIBUTES@", attributes(schedule))):
        text = text.replace(key, value)
    # Keyword lists keep the indentation of the line they stand on.
    out = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        column = line.find("@")
        line = line.replace("@PRUNER_KEYWORDS@", keywords(pruner, max(indent, column), modules=True))
        line = line.replace("@PRUNER_OPTION_KEYWORDS@", keywords(pruner, max(indent, column)))
        line = line.replace("@SCHEDULE_KEYWORDS_NO_KIND@", keywords(schedule, max(indent, column), skip=("kind",)))
        line = line.replace("@SCHEDULE_KEYWORDS@", keywords(schedule, max(indent, column)))
        out.append(line)
    open(output, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
