#!/usr/bin/env bash
# Give n8n_node/ its dev dependencies (@n8n/node-cli, typescript, eslint, n8n-workflow) from a
# cache outside the clone, keyed by the lockfile, so a fresh clone (CI) links instead of installing.
#
#   n8n_node/scripts/dev-deps.sh      # then: cd n8n_node && npm run lint && npm run build
#
# - no node_modules yet, or a link to another lockfile's cache: link node_modules to
#   $CACHE/devdeps-<sha256(package-lock.json)[:16]>/node_modules, filling that once with
#   `npm ci --ignore-scripts` (the package has no runtime dependencies; no install scripts run);
# - a real node_modules folder (a developer's own `npm install`) is left alone.
# Uses the Node that install-n8n.sh caches (it installs Node first, n8n after; both are cached).
# stdout: the node_modules path in use. Environment: OVERNIGHT_N8N_CACHE as for install-n8n.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${OVERNIGHT_N8N_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/overnight-n8n}"
eval "$("$HERE/scripts/install-n8n.sh")"
export PATH="$N8N_NODE_DIR/bin:$PATH"

LOCK_HASH="$(sha256sum "$HERE/package-lock.json" | cut -c1-16)"
TARGET="$CACHE_ROOT/devdeps-$LOCK_HASH"
LINK="$HERE/node_modules"

if [ -d "$LINK" ] && [ ! -L "$LINK" ]; then
  echo "$LINK"
  exit 0
fi

if [ ! -f "$TARGET/.complete" ]; then
  mkdir -p "$TARGET"
  exec 9>"$TARGET/.lock"
  flock 9
  if [ ! -f "$TARGET/.complete" ]; then
    echo "dev-deps: npm ci into $TARGET" >&2
    cp "$HERE/package.json" "$HERE/package-lock.json" "$TARGET/"
    rm -rf "$TARGET/node_modules"
    (cd "$TARGET" && "$N8N_NODE" "$N8N_NPM" ci --ignore-scripts --no-audit --no-fund --prefer-offline >&2)
    touch "$TARGET/.complete"
  fi
fi

if [ "$(readlink "$LINK" 2>/dev/null || true)" != "$TARGET/node_modules" ]; then
  rm -f "$LINK"
  ln -s "$TARGET/node_modules" "$LINK"
fi
echo "$LINK"
