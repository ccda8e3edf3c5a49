"""mqsm-nnunet: mQSM (He et al., MICCAI 2024) as an nnU-Net v2 plugin.

QSM reconstruction and brain-region segmentation from a local field map and a T1 in one network,
and regional brain-iron analysis in native space. Start with README.md; `physics` is the public core.
"""
__version__ = "0.1.0"
