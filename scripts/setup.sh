#!/usr/bin/env bash
# Set up a Debian machine for Distillate, then run the demo: `npm run setup` (README, Quick start).
#
#   1. the Debian packages the demo and the tests use, through apt-get (as root, or with sudo):
#        dataset-fashion-mnist   Fashion-MNIST's IDX files (the demo, the import and data tests)
#        redis-server            the distributed-precompute tests start their own (never a mock)
#        chromium                the page tests drive Debian's Chromium (playwright-core, no browser download)
#        mesa-vulkan-drivers     lavapipe from bookworm-backports: the WebGPU EP on a CPU-only machine
#      Each line printed says what was done; nothing is installed without apt-get.
#   2. npm ci (as the user who runs this script);
#   3. npm run demo (unless --no-demo; .ci/run uses the same script with --no-demo).
#
# Without root or sudo it installs nothing, says exactly what to run, and goes on: the tests that
# need a missing package are then skipped with its name (they fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    *) echo "setup: unknown option $arg (takes --no-demo)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }

packages=(dataset-fashion-mnist redis-server chromium)
backports=(mesa-vulkan-drivers)

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
  say "apt-get needs root: sudo will ask for your password"
  as_root=(sudo)
else
  as_root=(none)
fi

. /etc/os-release 2>/dev/null || true
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get (not Debian): install Fashion-MNIST, redis-server, Chromium and a Vulkan driver yourself; skipping system packages"
elif [ "${as_root[*]}" = none ]; then
  say "not root and no sudo: installing nothing. As root, run:"
  [ "${VERSION_CODENAME:-}" = bookworm ] && say "  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list"
  say "  apt-get update && apt-get install -y --no-install-recommends ${packages[*]}"
  say "  apt-get install -y --no-install-recommends -t bookworm-backports ${backports[*]}"
else
  export DEBIAN_FRONTEND=noninteractive
  # Debian's own backports suite holds Mesa 25, whose lavapipe Dawn accepts (bookworm's Mesa 22 is rejected).
  backports_suite=()
  suite_note=""
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "deb http://deb.debian.org/debian bookworm-backports main" | "${as_root[@]}" tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
      say "added the apt source bookworm-backports (/etc/apt/sources.list.d/bookworm-backports.list)"
    fi
    backports_suite=(-t bookworm-backports)
    suite_note=" from bookworm-backports"
  fi
  "${as_root[@]}" apt-get update -qq
  say "apt-get update"
  missing=()
  for p in "${packages[@]}" "${backports[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  for p in "${packages[@]}"; do
    if [[ " ${missing[*]} " == *" $p "* ]]; then
      "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$p" >/dev/null
      say "installed $p"
    else
      say "$p already installed"
    fi
  done
  for p in "${backports[@]}"; do
    if [[ " ${missing[*]} " == *" $p "* ]]; then
      "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${backports_suite[@]}" "$p" >/dev/null
      say "installed $p$suite_note"
    else
      say "$p already installed"
    fi
  done
fi

say "npm ci"
npm ci --no-audit --no-fund

if [ "$demo" = 1 ]; then
  say "npm run demo"
  # The Vulkan loader (lavapipe, for the WebGPU EP) wants a runtime directory.
  XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" npm run demo
fi
