#!/usr/bin/env bash
# Run every cmocka test binary given on the command line; report all, fail if any failed.
set -u
failed=()
passed=0
for t in "$@"; do
  echo "== $t"
  if "$t"; then passed=$((passed + 1)); else failed+=("$t"); fi
done
echo "unit test programs: ${passed} passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
