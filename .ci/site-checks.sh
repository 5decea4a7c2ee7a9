#!/usr/bin/env bash
# Browser, HTML and link checks of a built atlas.
#
#   .ci/site-checks.sh SITE_DIR [ARTIFACTS_DIR]
#
# 1. Chromium (file:// and a local http.server): no console error, no failed request,
#    channel filter and sorting, #unit-N anchors, axe-core (no serious/critical), screenshots.
# 2. Nu HTML Checker (vnu.jar): no error.
# 3. Links and anchors: page-relative, resolving, ending in index.html.
#
# Exits 0 without checking ONLY when a tool cannot be installed (with a loud message);
# otherwise any failed check makes it exit non-zero.
# Env: CHROMIUM_PATH (default /usr/bin/chromium), PYTHON (default python3).
set -uo pipefail

if [[ $# -lt 1 || ! -f "$1/index.html" ]]; then
  echo "usage: $0 SITE_DIR [ARTIFACTS_DIR]  (SITE_DIR must hold a built atlas with index.html)" >&2
  exit 2
fi
SITE_DIR=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROWSER_DIR="$ROOT/tests/browser"
ARTIFACTS=${2:-"$BROWSER_DIR/artifacts"}
mkdir -p "$ARTIFACTS"
ARTIFACTS=$(cd "$ARTIFACTS" && pwd)
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
export PYTHON=${PYTHON:-python3}

skip() {
  echo
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!! BROWSER CHECKS SKIPPED: $*"
  echo "!!! The site in $SITE_DIR was NOT checked in a browser, by vnu or for links."
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo
  exit 0
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1
}

# ---- tools -----------------------------------------------------------------
if [[ ! -x "$CHROMIUM_PATH" ]]; then
  echo "chromium not found at $CHROMIUM_PATH: installing the Debian package"
  apt_install chromium || skip "chromium is not installed and 'apt-get install chromium' failed"
  [[ -x "$CHROMIUM_PATH" ]] || CHROMIUM_PATH=$(command -v chromium || true)
  [[ -n "$CHROMIUM_PATH" && -x "$CHROMIUM_PATH" ]] || skip "chromium installed but not found"
  export CHROMIUM_PATH
fi
if ! command -v java >/dev/null 2>&1; then
  echo "java not found: installing default-jre-headless for the Nu HTML Checker"
  apt_install default-jre-headless || skip "java is not installed and 'apt-get install default-jre-headless' failed"
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || skip "node/npm are not installed"
command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON (for the local http.server) is not installed"

# --ignore-scripts: vnu-jar's postinstall would download a Java runtime; we use the system one.
if ! (cd "$BROWSER_DIR" && { npm ci --no-audit --no-fund --ignore-scripts --silent \
      || npm install --no-audit --no-fund --ignore-scripts --silent; }); then
  skip "npm could not install playwright-core, axe-core and vnu-jar in tests/browser"
fi

# ---- checks ----------------------------------------------------------------
failed=()
run_check() {
  local name=$1
  shift
  echo "=== $name"
  if "$@"; then
    echo "=== $name: passed"
  else
    echo "=== $name: FAILED"
    failed+=("$name")
  fi
}

run_check "browser (chromium, axe-core)" node "$BROWSER_DIR/check-site.js" "$SITE_DIR" "$ARTIFACTS"
run_check "html (vnu)" java -jar "$BROWSER_DIR/node_modules/vnu-jar/build/dist/vnu.jar" --errors-only --skip-non-html "$SITE_DIR"
run_check "links and anchors" node "$BROWSER_DIR/check-links.js" "$SITE_DIR"

echo
if ((${#failed[@]})); then
  echo "site checks FAILED: ${failed[*]}"
  exit 1
fi
echo "site checks passed: browser, html, links (screenshots in $ARTIFACTS)"
