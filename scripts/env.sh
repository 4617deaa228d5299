# Sourced by scripts/demo, scripts/test and scripts/bench: create .venv and install vec2pg
# into it with the extras named in $VEC2PG_EXTRAS. Idempotent and quiet when up to date.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VEC2PG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "scripts: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.vec2pg-installed-${VEC2PG_EXTRAS}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "scripts: installing vec2pg[$VEC2PG_EXTRAS] into $VENV (first run takes a few minutes)" >&2
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
            && "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[$VEC2PG_EXTRAS]"; } \
            >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "scripts: installing failed; the whole log is in $log" >&2
        exit 1
    fi
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
