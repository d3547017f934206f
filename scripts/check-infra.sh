#!/usr/bin/env bash
# Infrastructure checks, run by `make check-infra` (and so by `make test`):
#   1. checkov over infra/ (Bicep), in its own virtualenv .venv-checkov built from
#      requirements-infra.txt, offline. Every finding fails the run: fix it, or suppress it in the
#      Bicep file with `// checkov:skip=CKV_...: <reason>`.
#      infra/app/graph-permissions.bicep is skipped: checkov's pycep-parser cannot parse the
#      `extension microsoftGraphV1` statement. tests/infra parses and checks that file instead.
#      infra/app/sources.bicep too (user-defined types and lambdas); it declares no resource.
#   2. pytest tests/infra with the main venv (PY overrides the interpreter).
# Quiet on success; prints the tool output only when something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
PY="${PY:-.venv/bin/python}"
CHECKOV_VENV=".venv-checkov"
REQUIREMENTS="requirements-infra.txt"
STAMP="$CHECKOV_VENV/.requirements-infra.sha256"
GRAPH_MODULE="infra/app/graph-permissions.bicep"
SOURCES_MODULE="infra/app/sources.bicep"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fail() {
    cat "$log" >&2
    echo "check-infra: $1" >&2
    exit 1
}

# (Re)build the checkov venv only when it is missing or requirements-infra.txt changed.
if command -v sha256sum >/dev/null; then
    wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
else
    wanted="$(shasum -a 256 "$REQUIREMENTS" | cut -d' ' -f1)"  # macOS
fi
if [[ ! -x "$CHECKOV_VENV/bin/checkov" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$wanted" ]]; then
    command -v "$PYTHON" >/dev/null || { echo "check-infra: $PYTHON not found" >&2; exit 1; }
    rm -rf "$CHECKOV_VENV"
    "$PYTHON" -m venv "$CHECKOV_VENV" >"$log" 2>&1 || fail "creating $CHECKOV_VENV failed"
    "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$REQUIREMENTS" >"$log" 2>&1 || fail "installing $REQUIREMENTS failed"
    echo "$wanted" >"$STAMP"
fi

for module in "$GRAPH_MODULE" "$SOURCES_MODULE"; do
    [[ -f "$module" ]] || { echo "check-infra: $module is missing" >&2; exit 1; }
done

# BC_SKIP_MAPPING and --skip-download keep checkov off the network (no platform, no mappings).
if ! BC_SKIP_MAPPING=TRUE "$CHECKOV_VENV/bin/checkov" \
    --directory infra \
    --framework bicep \
    --skip-download \
    --compact \
    --quiet \
    --skip-path "$GRAPH_MODULE" \
    --skip-path "$SOURCES_MODULE" >"$log" 2>&1; then
    fail "checkov reported findings in infra/ (fix them or add a checkov:skip with a reason)"
fi
# checkov exits 0 when it cannot parse a file; an unparsed file is an unchecked file.
if grep -q "Parsing errors" "$log"; then
    fail "checkov could not parse a Bicep file"
fi
grep -q "Passed checks: [1-9]" "$log" || fail "checkov checked nothing in infra/"

if [[ ! -x "$PY" ]]; then
    echo "check-infra: $PY not found; run 'make install' or set PY=/path/to/python" >&2
    exit 1
fi
"$PY" -m pytest tests/infra -q -p no:cacheprovider >"$log" 2>&1 || fail "tests/infra failed"
