#!/usr/bin/env bash
# Rebuilds the web phone's bundle, src/rtc2sip/web/static/phone.js (committed: commit it after a change).
#
#   webphone/build.sh           npm ci when needed, then bundle
#   webphone/build.sh --check   exit 1 when the committed bundle is not what the sources build
#
# Needs node >= 18 and the npm registry the first time (npm ci, versions pinned by package-lock.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.rtc2sip-install
want="$(sha256sum package.json package-lock.json | sha256sum | cut -c1-64)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
exec node build.mjs "$@"
