"""Fixtures every test module may use: a private nnU-Net installation in this process."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import NNUNET_FOLDERS


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch) -> Path:
    """nnU-Net's three folders under tmp_path/nnunet, set in this process (nnunetv2.paths reads them on
    every use; subprocesses inherit them), with nnU-Net's own process counts."""
    root = tmp_path / "nnunet"
    for name in NNUNET_FOLDERS:
        monkeypatch.setenv(name, str(root / name))
    for name in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc"):
        monkeypatch.delenv(name, raising=False)
    return root
