#!/usr/bin/env bash
# Runs every fuzz target of weft for a while each: hack/fuzz.sh <time>
# (a go test -fuzztime value, e.g. 30s or 5000x). A failing input is
# written to its package's testdata/fuzz/<target>/ and fails the run; keep
# it there as a regression case once the bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:?usage: hack/fuzz.sh <fuzztime>}
if [[ $fuzztime == 0 || $fuzztime == 0s ]]; then
  echo "fuzzing left out (fuzz time $fuzztime)"
  exit 0
fi
# package:target, one per fuzz target; a test fails when one is missing.
targets=(
  internal/mesh:FuzzBuild
  internal/xds/translate:FuzzTranslate
  internal/xds/translate:FuzzAccessLogFormat
  internal/xds/translate:FuzzAllowRules
  internal/inject:FuzzInject
  internal/xds/auth:FuzzTokenAndNode
  internal/xds/auth:FuzzStreamAuthentication
  controllers:FuzzPodCertificateRequest
  internal/wire:FuzzNodeID
)
for t in "${targets[@]}"; do
  pkg=${t%%:*} name=${t##*:}
  echo "fuzzing $name in ./$pkg for $fuzztime"
  go test "./$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime"
done
