# Shared set-up for scripts/run and scripts/test: Debian packages, Python, the virtualenv.
# Sourced, not executed. Everything here is idempotent and quiet when there is nothing to do.

say() { printf '%s\n' "$*" >&2; }

# ensure_debian_packages PKG… — install the packages that are missing (as root, or via sudo).
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      say "missing Debian packages: ${missing[*]} — install them as root (apt-get install ${missing[*]})"
      return 1
    fi
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# find_python — a Python 3.11+ interpreter (the system's on Debian 12).
find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

# ensure_venv [EXTRAS] — .venv with runas installed (editable); reinstalls when pyproject changes.
ensure_venv() {
  local extras="${1:-}" py stamp want
  if ! py=$(find_python); then
    ensure_debian_packages python3 python3-venv
    py=$(find_python) || { say "Python 3.11 or newer is required"; return 1; }
  fi
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      ensure_debian_packages python3-venv
      "$py" -m venv .venv
    fi
  fi
  want="$(sha256sum pyproject.toml | cut -c1-16)${extras:+-$extras}"
  stamp=.venv/.runas-installed
  if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp" 2>/dev/null; then
    say "installing runas${extras:+ [$extras]} into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}" 2>&1 \
      | grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true
    .venv/bin/python -c "import runas" || { say "installing runas failed"; return 1; }
    printf '%s\n' "$want" > "$stamp"
  fi
}
