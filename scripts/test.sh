#!/usr/bin/env bash
# README command 2: install (first run only), then run the whole test suite on CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install.sh"
cd "$repo"
exec python -m pytest "$@"
