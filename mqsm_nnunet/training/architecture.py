"""MQSMNet from a plans configuration, and the plans that describe a trainer variant's network.

A variant fixes some sizes over the plans (`network_overrides`, a width cap). nnU-Net's way is that
the plans plus the trainer's class name rebuild the network, and that the plans copied into the
results folder say what was trained: `plans_describing_network` writes the variant's sizes into the
plans the trainer runs under, so the results folder's `plans.json` names exactly the network in its
checkpoints. The network is then built from the plans alone (`build_mqsm_network`): a plans.json
edited by hand is what gets built, never silently overruled by a class attribute.
"""
from __future__ import annotations

import copy
import pydoc

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mqsm_nnunet.network import MQSMNet

# Keys of PlainConvUNet's constructor that MQSMNet shares; anything else in stock plans is dropped.
UNET_KEYS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
             "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
             "dropout_op_kwargs", "nonlin", "nonlin_kwargs")
# mQSM keys the planner may write into the plans' arch_kwargs.
MQSM_ARCH_KEYS = ("t1_channels", "qsm_minus_channel", "recon_width", "recon_blocks", "recon_skip_channels",
                  "recon_dilations", "fusion", "fusion_stages", "qsm_stream_input")


def cap_features(features_per_stage, caps: int | tuple[int, ...]) -> list[int]:
    """Stage widths capped by one number, or by one per stage (the last repeated for deeper stages)."""
    caps = (caps,) if isinstance(caps, int) else tuple(caps)
    return [min(int(f), caps[min(s, len(caps) - 1)]) for s, f in enumerate(features_per_stage)]


def plans_describing_network(plans: dict, configuration: str, overrides: dict,
                             max_features: int | tuple[int, ...] | None) -> dict:
    """A copy of `plans` whose `configuration` (inheritance resolved) carries `overrides` and the capped
    stage widths in its arch_kwargs; `plans` itself is left as it is."""
    if not overrides and max_features is None:
        return plans
    resolved = PlansManager(plans).get_configuration(configuration).configuration
    described = copy.deepcopy(plans)
    entry = copy.deepcopy(resolved)
    entry.pop("inherits_from", None)
    arch_kwargs = entry["architecture"]["arch_kwargs"]
    arch_kwargs.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
    if max_features is not None and "features_per_stage" in arch_kwargs:   # QSM-only plans have no U-Net
        arch_kwargs["features_per_stage"] = cap_features(arch_kwargs["features_per_stage"], max_features)
    described["configurations"][configuration] = entry
    return described


def build_mqsm_network(configuration_manager: ConfigurationManager, num_input_channels: int,
                       num_output_channels: int, deep_supervision: bool) -> MQSMNet:
    """MQSMNet from a configuration's arch kwargs alone (ours or stock PlainConvUNet / ResEnc ones).

    ResEnc plans give their residual blocks per stage as MQSMNet's plain convolutions per stage (mQSM
    has no residual encoder).

    Raises:
        RuntimeError: the configuration is 2D (the dipole model is 3D), or a class named in the plans
            cannot be imported.
    """
    if len(configuration_manager.patch_size) != 3:
        raise RuntimeError("mQSM needs a 3D configuration (the dipole physics is 3D): train 3d_fullres, not "
                           f"a {len(configuration_manager.patch_size)}D one")
    given = dict(configuration_manager.network_arch_init_kwargs)
    if "n_conv_per_stage" not in given and "n_blocks_per_stage" in given:  # ResidualEncoderUNet plans
        given["n_conv_per_stage"] = given["n_blocks_per_stage"]
    kwargs = {k: given[k] for k in UNET_KEYS if k in given}
    kwargs.update({k: given[k] for k in MQSM_ARCH_KEYS if k in given})
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if isinstance(kwargs.get(key), str):
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise RuntimeError(f"the plans' arch_kwargs name {key} = '{kwargs[key]}', which cannot be imported "
                                   "here: check the plans (or install the package that defines it)")
            kwargs[key] = located
    network = MQSMNet(input_channels=num_input_channels, num_classes=num_output_channels,
                      deep_supervision=deep_supervision, **kwargs)
    network.apply(MQSMNet.initialize)
    return network
