#!/bin/sh
# The API reference, from the docstrings and the type stubs (pdoc: pip install pdoc, or the `dev` extra).
# Any warning fails the build (-W error). Output: docs/api/_build/index.html
#   sh docs/api/build.sh [OUTDIR]
set -eu
out=${1:-"$(dirname "$0")/_build"}
rm -rf "$out"
python -W error -m pdoc --docformat restructuredtext -o "$out" \
  turbomem turbomem.memory turbomem.numa turbomem.smaps turbomem.procfs turbomem.results turbomem.errors \
  turbomem.constants turbomem.cybuild turbomem.packet turbomem.bench
echo "API reference: $out/index.html ($(find "$out" -name '*.html' | wc -l) pages)"
