#!/usr/bin/env bash
# Regenerates the key table of docs/recipes.md (between its "options" markers) from the option
# lists compiled into build/libprune-run. A test fails while the table is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(./build/libprune-run --print-options)
python3 - "$table" <<'PY'
import sys
path = "docs/recipes.md"
text = open(path).read()
begin, end = "<!-- options:begin -->", "<!-- options:end -->"
if begin not in text or end not in text:
    sys.exit(f"{path} has no {begin} ... {end} block")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + sys.argv[1] + "\n" + end + tail)
PY
echo "docs/recipes.md updated"
