"""mQSM network modules (pure torch + dynamic_network_architectures; nothing from nnunetv2)."""
from mqsm_nnunet.network.mqsm_net import MQSMNet
from mqsm_nnunet.network.mtrans import MutualTransformer
from mqsm_nnunet.network.reconstruction import ReconstructionNet

__all__ = ["MQSMNet", "MutualTransformer", "ReconstructionNet"]
