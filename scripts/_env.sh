# shellcheck shell=bash
# The project environment, shared by scripts/demo, scripts/test, scripts/lock and .ci/run.
#
#   . scripts/_env.sh; ll_env test|demo
#
# makes (or reuses) a virtual environment at $LEASELINE_VENV (default: .venv at the repo root)
# from the base interpreter $PYTHON (default: python3 on PATH), installs the pinned versions of
# requirements/<name>.txt plus leaseline itself (editable) with uv, and puts its bin/ first on
# PATH. Nothing is ever installed into the base interpreter: PEP 668 interpreters (Debian's,
# Homebrew's) and interpreters already full of packages work alike.
#
# uv: the one on PATH, else one installed with pip into a small bootstrap venv (.venv-bootstrap)
# at the version pinned in requirements/uv.txt. uv does not read pip's configuration, so the
# machine's pip settings (index-url, extra-index-url, find-links, cert, trusted-host) are passed
# on to it, with pip's rule of taking the best version across all indexes.
# An environment whose lock file, pyproject.toml and interpreter are unchanged is reused as is.

LL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LL_VENV=${LEASELINE_VENV:-$LL_ROOT/.venv}
LL_BASE_PY=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never  # use the interpreter given, never fetch one
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

ll_log() { echo "leaseline env: $*" >&2; }

ll_die() {
  ll_log "$*"
  exit 2
}

# The base interpreter must exist and be >= 3.10.
ll_base_python() {
  local py search=$PATH
  if [ -n "${VIRTUAL_ENV:-}" ]; then  # an active venv (ours, after ll_use) is never the base
    local dir rest=""
    local IFS=:
    for dir in $PATH; do [ "$dir" = "$VIRTUAL_ENV/bin" ] || rest=${rest:+$rest:}$dir; done
    search=$rest
  fi
  py=$(PATH=$search command -v "$LL_BASE_PY" 2>/dev/null) || ll_die "no '$LL_BASE_PY' on PATH (set PYTHON=/path/to/python3.10+)"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || ll_die "$py is $("$py" -V 2>&1); leaseline needs Python >= 3.10 (set PYTHON=...)"
  echo "$py"
}

# Print the uv binary to use, installing it into .venv-bootstrap when none is on PATH.
ll_uv() {
  if [ -n "${LEASELINE_UV:-}" ]; then echo "$LEASELINE_UV"; return; fi
  if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
  local boot=$LL_ROOT/.venv-bootstrap want
  want=$(grep -E '^uv==' "$LL_ROOT/requirements/uv.txt")
  if [ -x "$boot/bin/uv" ] && [ "$(cat "$boot/.pinned" 2>/dev/null)" = "$want" ]; then
    echo "$boot/bin/uv"; return
  fi
  local py; py=$(ll_base_python)
  ll_log "no uv on PATH: installing $want into $boot (a bootstrap venv; $py stays untouched)"
  rm -rf "$boot"
  if ! "$py" -m venv "$boot" >/dev/null 2>&1; then
    rm -rf "$boot"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      ll_log "$py cannot make a venv (Debian splits venv out): installing python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$py" -m venv "$boot" >&2 || ll_die "$py -m venv still fails; install uv (pip install --user uv) and retry"
    else
      ll_die "$py cannot create a virtual environment. Install python3-venv (sudo apt-get install python3-venv) or uv, then retry."
    fi
  fi
  "$boot/bin/python" -m pip install --quiet "$want" >&2 || ll_die "pip could not install $want into $boot"
  echo "$want" >"$boot/.pinned"
  echo "$boot/bin/uv"
}

# The machine's pip settings, as uv options (one per line). pip itself reads its config files and
# PIP_* variables; we ask it, through the base interpreter's pip when it has one.
ll_pip_settings() {
  local py=$1
  "$py" - <<'PYEOF' 2>/dev/null || true
import ast, subprocess, sys
try:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, timeout=60).stdout
except Exception:
    raise SystemExit(0)
conf, rank = {}, {}
order = {":env:": 3, "install": 2, "global": 1}  # pip's precedence for `pip install`
for line in out.splitlines():  # global.index-url='https://...'   :env:.find-links='/opt/wheels'
    key, sep, value = line.partition("=")
    section, dot, name = key.rpartition(".")
    if not sep or not dot or section not in order or order[section] < rank.get(name, 0):
        continue
    try:
        conf[name], rank[name] = str(ast.literal_eval(value)), order[section]
    except (ValueError, SyntaxError):
        continue
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
         "find-links": "--find-links", "trusted-host": "--allow-insecure-host"}
for key, flag in flags.items():
    for item in conf.get(key, "").split():
        print(flag)
        print(item)
if conf.get("extra-index-url") or conf.get("find-links"):
    print("--index-strategy")  # pip's rule: the best version across every index
    print("unsafe-best-match")
if conf.get("cert"):
    print("SSL_CERT_FILE=" + conf["cert"])  # uv's way to take a CA bundle
PYEOF
}

# ll_uv_opts PY: fill the array LL_UV_OPTS with the machine's pip settings for uv.
ll_uv_opts() {
  local line
  LL_UV_OPTS=()
  while IFS= read -r line; do
    case $line in
      SSL_CERT_FILE=*) [ -n "${SSL_CERT_FILE:-}" ] || export SSL_CERT_FILE="${line#SSL_CERT_FILE=}" ;;
      *) LL_UV_OPTS+=("$line") ;;
    esac
  done < <(ll_pip_settings "$1")
}

# ll_env NAME: make .venv match requirements/NAME.txt (test: exactly; demo: at least) and use it.
ll_env() {
  local name=$1 lock=$LL_ROOT/requirements/$1.txt
  [ -f "$lock" ] || ll_die "no lock file $lock"
  local py; py=$(ll_base_python)
  local ident
  ident=$("$py" -c 'import sys, platform; print(sys.executable, platform.python_version())')
  local sum
  sum=$(cat "$lock" "$LL_ROOT/pyproject.toml" | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
  local stamp="$name $sum $ident"
  local have=""
  [ -f "$LL_VENV/.leaseline-stamp" ] && have=$(cat "$LL_VENV/.leaseline-stamp")
  # the test environment holds the demo's packages at the same versions (the demo lock is
  # compiled against the test lock), so a current test environment serves the demo too
  if [ -x "$LL_VENV/bin/python" ] && { [ "$have" = "$stamp" ] || { [ "$name" = demo ] && [ "${have%% *}" = test ] \
      && [ "$(echo "$have" | cut -d' ' -f3-)" = "$ident" ]; }; }; then
    ll_use
    return
  fi
  local start=$SECONDS uv
  uv=$(ll_uv)
  ll_uv_opts "$py"
  local -a opts=("${LL_UV_OPTS[@]}")
  if [ -x "$LL_VENV/bin/python" ] && [ "$(echo "$have" | cut -d' ' -f3-)" != "$ident" ]; then
    ll_log "the interpreter changed ($ident): rebuilding $LL_VENV"
    rm -rf "$LL_VENV"
  fi
  if [ ! -x "$LL_VENV/bin/python" ]; then
    ll_log "creating $LL_VENV from $py"
    rm -rf "$LL_VENV"
    "$uv" venv --quiet --python "$py" "$LL_VENV" >&2 || ll_die "uv could not create $LL_VENV"
  fi
  rm -f "$LL_VENV/.leaseline-stamp"
  ll_log "installing requirements/$name.txt into $LL_VENV (uv)..."
  if [ "$name" = test ]; then
    "$uv" pip sync --quiet --python "$LL_VENV/bin/python" "${opts[@]}" "$lock" >&2 \
      || ll_die "uv pip sync $lock failed (see above)"
  else
    "$uv" pip install --quiet --python "$LL_VENV/bin/python" "${opts[@]}" -r "$lock" >&2 \
      || ll_die "uv pip install -r $lock failed (see above)"
  fi
  "$uv" pip install --quiet --python "$LL_VENV/bin/python" "${opts[@]}" --no-deps -e "$LL_ROOT" >&2 \
    || ll_die "uv could not install leaseline itself (editable) into $LL_VENV"
  echo "$stamp" >"$LL_VENV/.leaseline-stamp"
  ll_log "$LL_VENV ready in $((SECONDS - start)) s"
  ll_use
}

ll_use() {
  export VIRTUAL_ENV=$LL_VENV
  export PATH="$LL_VENV/bin:$PATH"
  LL_PY=$LL_VENV/bin/python
  export LL_PY
}
