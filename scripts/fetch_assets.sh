#!/usr/bin/env bash
# Fetch pinned third-party browser assets from the npm registry into an ignored folder.
# Nothing third-party is committed; the app serves these files itself (no CDN at runtime).
set -euo pipefail
HTMX_VERSION="2.0.8"
DEST="$(cd "$(dirname "$0")/.." && pwd)/aftersales/static/vendor"
if [[ -f "$DEST/htmx-$HTMX_VERSION.min.js" ]]; then
  exit 0
fi
mkdir -p "$DEST"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "fetching htmx.org@$HTMX_VERSION from the npm registry"
(cd "$WORK" && npm pack --silent "htmx.org@$HTMX_VERSION" >/dev/null)
tar -xzf "$WORK"/htmx.org-"$HTMX_VERSION".tgz -C "$WORK" package/dist/htmx.min.js
cp "$WORK/package/dist/htmx.min.js" "$DEST/htmx-$HTMX_VERSION.min.js"
cp "$WORK/package/dist/htmx.min.js" "$DEST/htmx.min.js"
echo "installed $DEST/htmx.min.js"
