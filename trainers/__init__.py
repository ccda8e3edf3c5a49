"""The folder `nnUNet_extTrainer` points at. nnU-Net imports every module here, so they stay tiny."""
