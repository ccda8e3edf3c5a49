#!/usr/bin/env bash
# Creates ./.venv (once) and installs mqsm-nnunet into it, editable, with its pinned dependencies.
# Sourced by scripts/demo.sh and scripts/test.sh, so each README command works on a fresh clone.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
stamp="$venv/.mqsm-installed"
if [ ! -f "$stamp" ] || [ "$repo/setup.cfg" -nt "$stamp" ]; then
  echo "[mqsm] installing into $venv (first run only: a few minutes)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$repo[test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
# nnU-Net finds mQSMTrainer through this folder (nnunetv2 >= 2.8.0).
export nnUNet_extTrainer="$repo/trainers"
