"""mQSMPredictor: nnU-Net's sliding window gives the QSM beside the segmentation, split off again."""
import copy

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from helpers import STOCK_3D

from mqsm_nnunet.predict.predictor import mQSMPredictor
from mqsm_nnunet.training.variants import mQSMTrainer_tiny

DATASET_JSON = {"channel_names": {"0": "T1", "1": "field", "2": "qsm_minus", "3": "mask"},
                "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz",
                "mqsm": {"channels": {"t1": 0, "field": 1, "qsm_minus": 2, "mask": 3}}}


def _predictor() -> tuple[mQSMPredictor, torch.nn.Module]:
    plans = PlansManager({"dataset_name": "Dataset999_Unit", "plans_name": "mQSMPlans", "label_manager": "LabelManager",
                          "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
                          "configurations": {"3d_fullres": copy.deepcopy(STOCK_3D)}})
    configuration = plans.get_configuration("3d_fullres")
    torch.manual_seed(0)
    network = mQSMTrainer_tiny.build_network_architecture(plans, configuration, 4, 3, False)
    with torch.no_grad():      # a trained-looking reconstruction: the zero-initialised output layer moved
        network.recon.out_conv.weight.normal_(0.0, 0.1)
    predictor = mQSMPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=torch.device("cpu"),
                              perform_everything_on_device=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [network.state_dict()], DATASET_JSON,
                                    "mQSMTrainer_tiny", None)
    return predictor, network.eval()


def test_sliding_window_qsm_and_segmentation_equal_the_network_on_one_tile():
    predictor, network = _predictor()
    data = torch.randn(4, 16, 32, 32)
    data[3] = 1.0
    with torch.no_grad():
        segmentation, qsm = network(data[None], with_qsm=True)
    # nnU-Net accumulates the Gaussian-weighted window in float16: agreement to half precision, away
    # from the outer 2 voxels, where the weights of a patch's edges and corners underflow float16
    inner = (slice(3, -3),) * 3
    predicted = predictor.predict_qsm(data).float()
    assert (predicted - qsm[0, 0])[inner].abs().max() <= 1e-3 * qsm.abs().max() and qsm.abs().max() > 1e-2
    logits = predictor.predict_logits_from_preprocessed_data(data).float()
    assert logits.shape == (3, 16, 32, 32)                 # the QSM channel is split off again
    assert (logits - segmentation[0])[(slice(None), *inner)].abs().max() <= 1e-3 * segmentation.abs().max()
    assert predictor.network is not None and not hasattr(predictor.network, "qsm_only")   # wrapper removed again
