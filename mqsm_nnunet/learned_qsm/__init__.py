"""The learned QSM of `mqsm_qsm`: an unrolled dipole inversion (`unrolled_net`) pretrained on varied simulated
fields with known susceptibility (`simulated_fields`, `pretraining`), run on whole volumes (`inference`),
fine-tuned on a user's own fields under a streak guard (`finetuning`), for a folder of field maps (`cohort`)."""
