"""nnU-Net training glue: mQSMTrainer and its variants (found through `trainers/`)."""
