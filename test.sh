#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs (idempotently),
# builds the broker once in release mode, runs the Rust tests, then the end-to-end tests in
# compat/ that start the real binary on loopback and drive it with stock clients.
set -euo pipefail
cd "$(dirname "$0")"
REPO=$PWD

# A cargo target directory outside the clone is reused when it exists (saves the RocksDB build).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d /root/.cache/runnel/target ] || mkdir -p "$HOME/.cache/runnel/target" 2>/dev/null; then
    export CARGO_TARGET_DIR="${HOME}/.cache/runnel/target"
  else
    export CARGO_TARGET_DIR="$REPO/target"
  fi
fi
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

log() { printf '\n==> %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
# libclang/clang: RocksDB's bindings; kcat: librdkafka 2.0 client; Go + sarama 1.22 (cgo zstd
# needs libzstd-dev and pkg-config); python3-venv for the Python clients.
APT_PACKAGES=(libclang-dev clang kcat golang-go golang-github-shopify-sarama-dev libzstd-dev pkg-config gcc libc6-dev python3-venv)
# Node.js and npm may come from elsewhere than Debian: install Debian's only when absent.
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# --- Python venv for the compat tests -----------------------------------------------------
VENV="$REPO/compat/.venv"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s compat/requirements.txt "$VENV/.requirements"; then
  log "creating the Python venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r compat/requirements.txt
  cp compat/requirements.txt "$VENV/.requirements"
fi

# --- npm packages (kafkajs) ---------------------------------------------------------------
if [ -f compat/js/package-lock.json ]; then
  if [ ! -d compat/js/node_modules ] || ! cmp -s compat/js/package-lock.json compat/js/node_modules/.package-lock.json.copy; then
    log "installing npm packages"
    (cd compat/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp compat/js/package-lock.json compat/js/node_modules/.package-lock.json.copy
  fi
fi

# --- Rust ---------------------------------------------------------------------------------
log "building runnel (release)"
cargo build --release --locked --workspace --all-targets
log "Rust tests"
cargo test --release --locked --workspace

# --- End-to-end tests with stock clients --------------------------------------------------
export RUNNEL_BIN="$CARGO_TARGET_DIR/release/runnel"
log "compat tests (stock clients against $RUNNEL_BIN)"
"$VENV/bin/python" -m pytest -q compat "$@"
