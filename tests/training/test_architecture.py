"""MQSMNet from any nnU-Net 3D plans (ours, stock PlainConvUNet and ResEnc ones), and plans that describe a variant."""
import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from helpers import STOCK_3D

from mqsm_nnunet.network import MQSMNet
from mqsm_nnunet.training.architecture import build_mqsm_network, plans_describing_network
from mqsm_nnunet.training.trainer import mQSMTrainer
from mqsm_nnunet.training.variants import (mQSMTrainer_inputFusionMap, mQSMTrainer_SA, mQSMTrainer_tiny,
                                           mQSMTrainer_tiny_inputFusionMap, mQSMTrainer_UNet)



def _configuration(**arch_changes) -> ConfigurationManager:
    config = {**STOCK_3D, "architecture": {**STOCK_3D["architecture"],
                                           "arch_kwargs": {**STOCK_3D["architecture"]["arch_kwargs"]}}}
    config["architecture"]["arch_kwargs"].update(arch_changes)
    return ConfigurationManager(config)


def _built_by(trainer) -> MQSMNet:
    """The network `trainer` trains: built from the plans it describes its sizes in (as at __init__)."""
    described = plans_describing_network({"configurations": {"3d_fullres": STOCK_3D}}, "3d_fullres",
                                         trainer.network_overrides, trainer.max_unet_features)
    return trainer.build_network_architecture(None, ConfigurationManager(described["configurations"]["3d_fullres"]),
                                              4, 3, False)


def _forward(network: MQSMNet) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return network(torch.randn(1, 4, 16, 32, 32))


def test_stock_plainconvunet_plans_build_the_paper_network():
    network = build_mqsm_network(_configuration(), 4, 5, deep_supervision=False)
    assert isinstance(network, MQSMNet)
    assert network.fusion == "mtrans" and network.recon.width == 64 and network.recon.n_blocks == 6
    assert network.t1_channels == (0,) and network.qsm_minus_channel == 2
    assert _forward(network).shape == (1, 5, 16, 32, 32)


def test_stock_residual_encoder_plans_map_blocks_to_convs():
    arch = dict(STOCK_3D["architecture"]["arch_kwargs"])
    arch["n_blocks_per_stage"] = arch.pop("n_conv_per_stage")
    config = ConfigurationManager({**STOCK_3D, "architecture": {
        **STOCK_3D["architecture"],
        "network_class_name": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
        "arch_kwargs": arch}})
    network = build_mqsm_network(config, 4, 3, deep_supervision=True)
    network.train()
    outputs = network(torch.randn(1, 4, 16, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 32, 32), (16, 16, 16), (8, 8, 8)]


def test_variant_overrides_reach_the_network():
    tiny = _built_by(mQSMTrainer_tiny)
    assert tiny.recon.width == 8 and tiny.recon.n_blocks == 2
    assert [conv.dilation[0] for block in tiny.recon.blocks for conv in (block.conv1, block.conv2)] == [1, 2, 4, 8]
    assert tiny.encoder.output_channels[0] == 16 and max(tiny.encoder.output_channels) <= 32
    assert _built_by(mQSMTrainer_UNet).fusion == "none"
    assert _built_by(mQSMTrainer_SA).fusion == "sa"
    assert _built_by(mQSMTrainer).fusion == "mtrans"


def test_one_stream_trainer_keeps_the_full_size_and_its_tiny_form_the_short_one():
    full = _built_by(mQSMTrainer_inputFusionMap)
    tiny = _built_by(mQSMTrainer_tiny_inputFusionMap)
    for network in (full, tiny):
        assert network.fusion == "input" and network.qsm_stream_input == "map"
        assert _forward(network).shape == (1, 3, 16, 32, 32)
    assert full.recon.width == 64 and full.encoder.output_channels[0] == 32
    assert tiny.recon.width == 8 and tiny.encoder.output_channels[0] == 16


def test_planned_mqsm_keys_are_used():
    config = _configuration(recon_width=24, recon_blocks=3, recon_skip_channels=16, fusion="sa",
                            fusion_stages=[-1], t1_channels=[0], qsm_minus_channel=2)
    network = build_mqsm_network(config, 4, 3, deep_supervision=False)
    assert (network.recon.width, network.recon.n_blocks, network.recon.skip_channels) == (24, 3, 16)
    assert network.fusion == "sa"


def test_2d_configuration_is_refused_with_a_clear_error():
    config_2d = {**STOCK_3D, "patch_size": [32, 32], "spacing": [3.0, 3.0]}
    with pytest.raises(RuntimeError, match="3D"):
        build_mqsm_network(ConfigurationManager(config_2d), 4, 3, deep_supervision=False)


def _plans() -> dict:
    return {"configurations": {"3d_fullres": STOCK_3D, "3d_lowres_like": {"inherits_from": "3d_fullres",
                                                                          "batch_size": 1}}}


def test_plans_describing_a_variant_rebuild_the_same_network():
    plans = _plans()
    described = plans_describing_network(plans, "3d_fullres", mQSMTrainer_tiny.network_overrides,
                                         mQSMTrainer_tiny.max_unet_features)
    arch = described["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [16, 32, 32, 32] and arch["recon_dilations"] == [1, 2, 4, 8]
    assert STOCK_3D["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256]   # input untouched
    configuration = ConfigurationManager(described["configurations"]["3d_fullres"])
    from_described = build_mqsm_network(configuration, 4, 3, False)            # the plans alone, no variant class
    from_variant = mQSMTrainer_tiny.build_network_architecture(None, configuration, 4, 3, False)
    assert [tuple(p.shape) for p in from_described.parameters()] == [tuple(p.shape) for p in from_variant.parameters()]


def test_an_edited_plans_file_is_what_gets_built_not_the_class_attribute():
    """A user who widens the reconstruction in the results folder's plans.json gets that network: the
    variant's class attribute (recon_width 8) does not overrule it."""
    described = plans_describing_network(_plans(), "3d_fullres", mQSMTrainer_tiny.network_overrides,
                                         mQSMTrainer_tiny.max_unet_features)
    described["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["recon_width"] = 12
    network = mQSMTrainer_tiny.build_network_architecture(
        None, ConfigurationManager(described["configurations"]["3d_fullres"]), 4, 3, False)
    assert network.recon.width == 12 and network.recon.in_conv[1].out_channels == 12


def test_plans_describing_an_inheriting_configuration_resolve_it():
    described = plans_describing_network(_plans(), "3d_lowres_like", {"recon_width": 8}, None)
    entry = described["configurations"]["3d_lowres_like"]
    assert "inherits_from" not in entry and entry["batch_size"] == 1
    assert entry["architecture"]["arch_kwargs"]["recon_width"] == 8
    assert "recon_width" not in described["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]


def test_unimportable_class_in_the_plans_is_named():
    with pytest.raises(RuntimeError, match="torch.nn.NoSuchNorm"):
        build_mqsm_network(_configuration(norm_op="torch.nn.NoSuchNorm"), 4, 3, False)


def test_plans_without_a_unet_keep_their_reconstruction_sizes_only():
    qsm_only = {**STOCK_3D, "architecture": {"network_class_name": "ReconstructionOnlyNet", "_kw_requires_import": [],
                                             "arch_kwargs": {"qsm_minus_channel": 1, "recon_width": 64}}}
    described = plans_describing_network({"configurations": {"3d_fullres": qsm_only}}, "3d_fullres",
                                         {"recon_width": 8}, (16, 32))
    assert described["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"] == {"qsm_minus_channel": 1,
                                                                                      "recon_width": 8}
