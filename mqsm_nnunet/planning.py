"""mQSMPlanner: nnU-Net's ExperimentPlanner with the mQSM network in its memory estimate.

nnU-Net picks patch and batch size by instantiating the planned network and asking it for
`compute_conv_feature_map_size`, compared with a reference tuned for PlainConvUNet. Planning with
MQSMNet makes that count include the full-resolution reconstruction net and the attention maps
of mTrans, so the chosen patch and batch fit the GPU memory target with the heavier network.
The plans carry the network's dotted class path and the mQSM keyword arguments (channel roles
from dataset.json, reconstruction-net size, fusion), as nnU-Net does for its own networks.

A dataset made from field maps alone (no T1: `mqsm_convert --qsm-only`) is planned for the network
`mQSMTrainer_QSM` trains, the reconstruction net alone (`ReconstructionOnlyNet`): the memory
estimate is that of its full-resolution trunk, and the plans' arch_kwargs hold only its own keys.
"""
from __future__ import annotations

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from mqsm_nnunet.io.dataset_metadata import MQSMChannels
from mqsm_nnunet.network import MQSMNet
from mqsm_nnunet.network.reconstruction import PAPER_RECON_BLOCKS, PAPER_RECON_SKIP, PAPER_RECON_WIDTH
from mqsm_nnunet.network.reconstruction_only import RECONSTRUCTION_ARCH_KEYS, ReconstructionOnlyNet

PLANS_NAME = "mQSMPlans"


class mQSMPlanner(ExperimentPlanner):
    """Plans `mQSMPlans` with MQSMNet (3D); 2D configurations stay PlainConvUNet (mQSM is 3D only)."""

    #: Reconstruction net and fusion as in the paper; trainer variants may override them.
    mqsm_network_kwargs = {"recon_width": PAPER_RECON_WIDTH, "recon_blocks": PAPER_RECON_BLOCKS,
                           "recon_skip_channels": PAPER_RECON_SKIP,
                           "fusion": "mtrans", "fusion_stages": [-1]}

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = PLANS_NAME,
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        channels = MQSMChannels.from_dataset_json(self.dataset_json)
        self.qsm_only = channels.qsm_only
        if self.qsm_only:
            self.mqsm_kwargs = {k: v for k, v in {**self.mqsm_network_kwargs,
                                                  "qsm_minus_channel": channels.qsm_minus}.items()
                                if k in RECONSTRUCTION_ARCH_KEYS}
        else:
            self.mqsm_kwargs = {**self.mqsm_network_kwargs, "t1_channels": [channels.t1],
                                "qsm_minus_channel": channels.qsm_minus}

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        is_3d = len(spacing) == 3
        self.UNet_class = (ReconstructionOnlyNet if self.qsm_only else MQSMNet) if is_3d else PlainConvUNet
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        if is_3d and self.qsm_only:  # the U-Net topology nnU-Net planned does not apply
            plan["architecture"]["arch_kwargs"] = dict(self.mqsm_kwargs)
            plan["architecture"]["_kw_requires_import"] = []
        elif is_3d:
            plan["architecture"]["arch_kwargs"].update(self.mqsm_kwargs)
        return plan

    def static_estimate_VRAM_usage(self, patch_size, input_channels, output_channels, arch_class_name,
                                   arch_kwargs, arch_kwargs_req_import):
        """nnU-Net's estimate, with the mQSM keyword arguments present when MQSMNet is planned; for
        ReconstructionOnlyNet its own estimate (it takes none of the U-Net topology)."""
        if arch_class_name.endswith(ReconstructionOnlyNet.__name__):
            network = ReconstructionOnlyNet(input_channels, output_channels, **self.mqsm_kwargs)
            return network.compute_conv_feature_map_size(patch_size)
        if arch_class_name.endswith(MQSMNet.__name__):
            arch_kwargs = {**arch_kwargs, **self.mqsm_kwargs}
        return super().static_estimate_VRAM_usage(patch_size, input_channels, output_channels, arch_class_name,
                                                  arch_kwargs, arch_kwargs_req_import)
