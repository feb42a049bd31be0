#!/usr/bin/env python3
"""Room sizes: no source file over 400 lines, and no function over 80 lines outside tests.

Checks the C++ (.cpp, .h) and Python (.py) sources under libprune/, bindings/, examples/, scripts/
and tests/. C++ function bodies are found by matching braces once comments and string literals are
blanked out: a brace opened at namespace or class level after a closing parenthesis starts a function
(constructor initialiser lists and trailing qualifiers included); Python functions come from the ast.
Prints every offender with its place and exits 1 when there is one.

  /usr/bin/python3 scripts/check_sizes.py [--max-file 400] [--max-function 80]
"""
import argparse
import ast
import os
import re
import sys

ROOTS = ("libprune", "bindings", "examples", "scripts", "tests")
CONTAINERS = re.compile(r"\b(namespace|class|struct|union|enum)\b[^;{}()]*$|extern\s*$")


def blank_comments_and_strings(text):
    """The text with comments and string/char literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = text.find(")" + m.group(1) + '"', i) if m else -1
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (j + 1 - i))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def cpp_functions(text):
    """(first line, last line) of every function body not nested in another function."""
    code = blank_comments_and_strings(text)
    stack, found, since = [], [], 0  # stack entries: (kind, line); `since`: where the current statement began
    line = 1
    for i, c in enumerate(code):
        if c == "\n":
            line += 1
        elif c == "{":
            head = code[since:i].strip()
            in_function = any(kind == "function" for kind, _ in stack)
            if in_function:
                kind = "block"
            elif CONTAINERS.search(head) or not head:
                kind = "container"
            elif ")" in head or head.endswith("]"):
                kind = "function"
            else:
                kind = "block"  # an initialiser list or an array
            stack.append((kind, line))
            since = i + 1
        elif c == "}":
            if stack:
                kind, start = stack.pop()
                if kind == "function":
                    found.append((start, line))
            since = i + 1
        elif c == ";" and not any(kind == "function" for kind, _ in stack):
            since = i + 1
    return found


def python_functions(text):
    tree = ast.parse(text)
    return [(node.lineno, node.end_lineno, node.name) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-file", type=int, default=400)
    ap.add_argument("--max-function", type=int, default=80)
    args = ap.parse_args()
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems, files = [], 0
    for root in ROOTS:
        for folder, _, names in os.walk(os.path.join(top, root)):
            for name in sorted(names):
                if not name.endswith((".cpp", ".h", ".py")):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, top)
                text = open(path, encoding="utf-8").read()
                files += 1
                lines = text.count("\n")
                if lines > args.max_file:
                    problems.append(f"{rel}: {lines} lines (at most {args.max_file}); split it by concern")
                if rel.startswith("tests" + os.sep):
                    continue
                if name.endswith(".py"):
                    spans = [(a, b, f"def {n}") for a, b, n in python_functions(text)]
                else:
                    spans = [(a, b, "function") for a, b in cpp_functions(text)]
                for first, last, what in spans:
                    if last - first + 1 > args.max_function:
                        problems.append(f"{rel}:{first}: {what} of {last - first + 1} lines (at most "
                                        f"{args.max_function}); split it")
    for p in problems:
        print(p)
    print(f"check_sizes: {files} files, {len(problems)} over the limits")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
