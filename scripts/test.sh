#!/usr/bin/env bash
# rtc2sip's test command (CI runs it through .ci/run).
#
#   scripts/test.sh [pytest args...]
#
# 1. Installs what the tests need, idempotently (each step is skipped when already done): Debian
#    packages (chromium baresip sip-tester kamailio ... ; apt-get update once, only if something is
#    missing), a venv in .venv with `pip install -e '.[test]'`, the node modules of tests/e2e/js
#    (npm ci) and the browser bundles of JsSIP and SIP.js (tests/e2e/js/dist/jssip.js, sipjs.js);
#    rebuilds the web phone's committed bundle from webphone/ (webphone/build.sh: npm ci + esbuild,
#    deterministic, so an unchanged source leaves src/rtc2sip/web/static/phone.js unchanged).
# 2. ruff check, mypy (pyproject's config, plus the e2e harness).
# 3. pytest over tests/ inside a private network namespace that has only `lo` (Chromium would
#    otherwise pick another interface for ICE, and every port stays private to the run), and a PID
#    namespace, so that nothing a test started can outlive the run. Installs happen before, outside
#    the namespace, since they need the registries.
# 4. With no pytest args (the full run): the media tests again with RTC2SIP_FAST_PATH=off, so that
#    every media test runs on the compiled fast path (the default) and on the pure-Python relay.
#
# Exit status: pytest's; if pytest passed but ruff or mypy failed, 1.
# Environment: RTC2SIP_SKIP_LINT=1 skips ruff and mypy (quick local iterations);
#              RTC2SIP_SKIP_INSTALL=1 skips step 1 (offline, already installed);
#              PYTHON=python3.x chooses the interpreter of a new .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

JS_DIR=tests/e2e/js
VENV="$ROOT/.venv"
DEB_PACKAGES=(
  chromium baresip sip-tester kamailio kamailio-websocket-modules kamailio-tls-modules
  rtpengine-daemon coturn tshark ffmpeg sngrep iproute2 nftables sipvicious python3 python3-venv
  build-essential python3-dev # the optional media fast path (setup.py) builds with them
)
MIN_NODE_MAJOR=20 # playwright-core 1.65

step() { printf '\n==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

sha() { sha256sum "$@" | sha256sum | cut -c1-64; }

install_debian_packages() {
  local missing=() p
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
  fi
  if [ "${#missing[@]}" -eq 0 ]; then
    return
  fi
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged daemons (kamailio, rtpengine, coturn) must not start on the host: tests start their own.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    added_policy=1
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # wireshark-common would ask whether non-root users may capture.
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | as_root debconf-set-selections || true
  local rc=0
  as_root apt-get update -q || rc=$?
  if [ "$rc" -eq 0 ]; then
    as_root apt-get install -y -q -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null || rc=$?
  fi
  if [ "$added_policy" = 1 ]; then
    as_root rm -f "$policy"
    trap - EXIT
  fi
  if [ "$rc" -ne 0 ]; then
    echo "apt-get failed ($rc)" >&2
    exit "$rc"
  fi
}

install_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  local stamp="$VENV/.rtc2sip-install" want
  # the C fast path is built by pip install: a changed source must rebuild it
  want="$(sha pyproject.toml setup.py src/rtc2sip/media/fastpath/*.[ch])"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" -c 'import rtc2sip, pytest' 2>/dev/null; then
    step "pip install -e '.[test]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
  fi
}

install_js() {
  if ! command -v node >/dev/null; then
    warn "node is missing: browser tests cannot run"
    return
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
    warn "node $(node --version) is older than $MIN_NODE_MAJOR (playwright-core needs it): browser tests will fail"
  fi
  local stamp="$JS_DIR/node_modules/.rtc2sip-install" want lock=package.json
  [ -f "$JS_DIR/package-lock.json" ] && lock=package-lock.json
  want="$(sha "$JS_DIR/package.json" "$JS_DIR/$lock")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "npm install in $JS_DIR"
    if [ "$lock" = package-lock.json ]; then
      (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$JS_DIR" && npm install --no-audit --no-fund --loglevel=error)
    fi
    echo "$want" >"$stamp"
    rm -f "$JS_DIR/dist/jssip.js" "$JS_DIR/dist/sipjs.js"
  fi
  if [ ! -s "$JS_DIR/dist/jssip.js" ] || [ ! -s "$JS_DIR/dist/sipjs.js" ]; then
    # Neither npm package has a browser build to load with <script>: package.json's build script runs
    # esbuild --bundle --format=iife into dist/jssip.js (global JsSIP) and dist/sipjs.js (global SIP).
    step "bundling JsSIP and SIP.js for the browser"
    (cd "$JS_DIR" && npm run --silent build)
  fi
}

build_webphone() {
  if ! command -v node >/dev/null; then
    warn "node is missing: the committed web phone bundle is served as it is"
    return
  fi
  step "building the web phone (webphone/build.sh)"
  webphone/build.sh
}

if [ "${RTC2SIP_SKIP_INSTALL:-0}" = 0 ]; then
  install_debian_packages
  install_python
  install_js
  build_webphone
fi

lint_rc=0
if [ "${RTC2SIP_SKIP_LINT:-0}" = 0 ]; then
  lint_dirs=()
  for d in src tests bench scripts; do [ -d "$d" ] && lint_dirs+=("$d"); done
  step "ruff check ${lint_dirs[*]}"
  "$VENV/bin/ruff" check "${lint_dirs[@]}" || lint_rc=1
  step "mypy"
  "$VENV/bin/mypy" || lint_rc=1
  step "mypy tests/e2e/harness"
  "$VENV/bin/mypy" tests/e2e/harness || lint_rc=1
fi

# --pid --fork --kill-child: the namespace's processes all die with the run, whatever a test leaked.
ns=(unshare --net --pid --fork --kill-child --mount-proc)
if [ "$(id -u)" != 0 ]; then
  ns=(unshare --user --map-root-user --net --pid --fork --kill-child --mount-proc)
fi
pytest=("$VENV/bin/python" -m pytest -ra)
# The media tests, run a second time on the pure-Python relay (step 4).
MEDIA_TESTS=(
  tests/unit/test_media_plane.py tests/unit/test_ipv6_media.py tests/unit/test_media_channel.py
  tests/unit/test_recording.py tests/unit/test_udpmux.py tests/integration/test_media_workers.py
  tests/e2e/test_breaker_e2e.py tests/e2e/test_breaker_features_e2e.py tests/e2e/test_breaker_robustness_e2e.py
  tests/e2e/test_breaker_signalling_e2e.py tests/e2e/test_ice_e2e.py tests/e2e/test_ipv6_e2e.py
  tests/e2e/test_media_plane_browser.py tests/e2e/test_recording_e2e.py tests/e2e/test_sipjs_e2e.py
  tests/e2e/test_video_e2e.py tests/e2e/test_webphone_e2e.py tests/e2e/test_coder_e2e.py
  tests/e2e/test_testpattern_e2e.py
)
off_pass=""
if [ "$#" -eq 0 ]; then off_pass="${MEDIA_TESTS[*]}"; fi
# Inside the namespace: the main pass (the fast path's default, auto), then the off pass.
inner='ip link set lo up || exit 125
export RTC2SIP_E2E_STRICT=1
"$@"; rc=$?
if [ -n "$OFF_PASS" ]; then
  printf "\n==> pytest again, the media tests on the pure-Python relay (RTC2SIP_FAST_PATH=off)\n" >&2
  RTC2SIP_FAST_PATH=off "$@" $OFF_PASS || rc=1
fi
exit $rc'

set +e
if "${ns[@]}" true 2>/dev/null; then
  step "pytest in a private network namespace (lo only)"
  # bash stays PID 1 of the namespace (it reaps orphans; pytest as PID 1 would ignore SIGTERM).
  OFF_PASS="$off_pass" "${ns[@]}" bash -c "$inner" rtc2sip-netns "${pytest[@]}" "$@"
  rc=$?
elif [ "${CI:-}" = true ]; then
  echo "unshare --net is not permitted here; the e2e tests need a private network namespace" >&2
  rc=1
else
  warn "cannot create a network namespace (unshare --net): running pytest on the host network;" \
    "browser tests will be skipped"
  "${pytest[@]}" "$@"
  rc=$?
fi
set -e

if [ "$rc" -eq 0 ] && [ "$lint_rc" -ne 0 ]; then
  echo "pytest passed, but ruff or mypy failed" >&2
  rc=1
fi
exit "$rc"
