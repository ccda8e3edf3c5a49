#!/usr/bin/env bash
# README command 1: install (first run only), then run the whole mQSM pipeline on the synthetic cohort.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install.sh"
exec mqsm_demo "$@"
