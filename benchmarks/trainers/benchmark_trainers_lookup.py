"""What nnU-Net's trainer lookup finds in this folder (nnUNet_extTrainer=trainers:benchmarks/trainers);
the classes live in `benchmarks/benchmark_trainers.py` (see its docstring for why)."""
from benchmark_trainers import mQSMTrainer_tiny_qsmMapOnly, nnUNetTrainer_tinyLength, nnUNetTrainer_tinyRecipe

__all__ = ["mQSMTrainer_tiny_qsmMapOnly", "nnUNetTrainer_tinyLength", "nnUNetTrainer_tinyRecipe"]
