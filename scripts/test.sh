#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: ruff lint, ruff format, mypy (strict),
# hadolint (Dockerfile), the docs site (mkdocs build --strict: broken links are errors) and pytest.
# All checks run even when an early one fails; the exit status is non-zero if any failed.
# Extra arguments go to pytest, e.g. `./scripts/test.sh -k serial -x`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh

BIN=.venv/bin
# Home Assistant's own tables, fetched by setup.sh, for tests/test_ha_discovery.py.
HA_SOURCE=${HA_SOURCE:-$(cat .venv/.ha-source)}
export HA_SOURCE
failed=()

check() {
    local name=$1
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        # pytest exits 5 when it collected no tests: that is a failure here, not a pass.
        [ "$name" = pytest ] && [ "$rc" -eq 5 ] && echo "pytest collected no tests" >&2
        failed+=("$name (exit $rc)")
    fi
}

check "ruff check" "$BIN/ruff" check .
check "ruff format" "$BIN/ruff" format --check .
check mypy "$BIN/mypy"
check hadolint "$BIN/hadolint" Dockerfile
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
check docs "$BIN/mkdocs" build --strict --quiet --site-dir "$SITE"
check pytest "$BIN/pytest" "$@"

echo
if [ ${#failed[@]} -ne 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all checks passed"
