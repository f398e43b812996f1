#!/usr/bin/env bash
# Interleaved A/B of the ORT engine's training speed: this checkout against another (e.g. a
# `git worktree add /tmp/before <commit>` with `npm ci` run in it), in turns, so the machine's
# drift between runs falls on both. Prints one line per run and the after/before ratio per pair.
#
#   bash scripts/bench/ab-checkouts.sh /tmp/before [pairs=3]
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
other="${1:?usage: ab-checkouts.sh <other-checkout> [pairs]}"
pairs="${2:-3}"
cp "$here/scripts/bench/ab-train.ts" "$other/scripts/ab-train.tmp.ts"
trap 'rm -f "$other/scripts/ab-train.tmp.ts"' EXIT
rate() { (cd "$1" && node --conditions=source --import tsx "$2" "$(mktemp -d)" "$3" 2>/dev/null | tail -1 | sed 's/.*"median":\([0-9.]*\).*/\1/'); }
for i in $(seq 1 "$pairs"); do
  for which in mlp cnn; do
    before=$(rate "$other" scripts/ab-train.tmp.ts "$which")
    after=$(rate "$here" scripts/bench/ab-train.ts "$which")
    echo "pair $i $which: before $before, after $after samples/s, after/before $(python3 -c "print(round($after / $before, 3))")"
  done
done
