"""mQSMPredictor: nnU-Net's predictor, giving the QSM map beside the segmentation.

Nothing of nnU-Net's prediction is rewritten. The stock sliding window (Gaussian weighting,
mirroring test-time augmentation) and the fold ensembling average whatever channels the network
returns, so during our predictions the network is wrapped to return the segmentation logits with
the QSM appended as one more channel; the predictor splits it off before nnU-Net's segmentation
export and writes `<case>_qsm.nii.gz` itself (see `export.py`). With `qsm_only` the wrapper runs
the reconstruction net alone (the QSM never needs the T1 or the segmentation branch).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

from mqsm_nnunet.predict.export import export_qsm
from mqsm_nnunet.io.dataset_metadata import MQSMChannels


class _QSMAsExtraChannel(nn.Module):
    """Adapts MQSMNet to the stock sliding window: one tensor, QSM appended (or QSM alone)."""

    def __init__(self, network: nn.Module, qsm_only: bool):
        super().__init__()
        self.network = network
        self.qsm_only = qsm_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qsm_only:
            return self.network.reconstruct(x)
        segmentation, qsm = self.network(x, with_qsm=True)
        return torch.cat([segmentation, qsm.to(segmentation.dtype)], dim=1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Fold ensembling loads each fold's weights into the wrapped network."""
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)


class _HeadCount:
    """A label manager whose output-channel count includes the QSM channel (for preallocation)."""

    def __init__(self, label_manager, num_segmentation_heads: int):
        self._label_manager = label_manager
        self.num_segmentation_heads = num_segmentation_heads

    def __getattr__(self, name):
        return getattr(self._label_manager, name)


class mQSMPredictor(nnUNetPredictor):
    """nnUNetPredictor that also writes `<case>_qsm.nii.gz` (ppm, native geometry, 0 outside the mask)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._current_item: dict | None = None

    @property
    def channels(self) -> MQSMChannels:
        """Channel roles from the model's dataset.json (`mqsm` block written by mqsm_convert)."""
        return MQSMChannels.from_dataset_json(self.dataset_json)

    @contextmanager
    def _network_outputs(self, qsm_only: bool):
        network, label_manager = self.network, self.label_manager
        n_outputs = 1 if qsm_only else label_manager.num_segmentation_heads + 1
        self.network = _QSMAsExtraChannel(network, qsm_only)
        self.label_manager = _HeadCount(label_manager, n_outputs)
        try:
            yield
        finally:
            self.network, self.label_manager = network, label_manager

    def predict_qsm(self, data: torch.Tensor) -> torch.Tensor:
        """Sliding-window QSM of one preprocessed case from the reconstruction net alone."""
        with self._network_outputs(qsm_only=True):
            return self.predict_sliding_window_return_logits(data)[0]

    def predict_qsm_ensemble(self, data: torch.Tensor) -> torch.Tensor:
        """Fold-ensembled sliding-window QSM of one preprocessed case from the reconstruction net alone:
        for cases without a T1 and models without a segmentation branch (`qsm_only.py`)."""
        with self._network_outputs(qsm_only=True):
            return super().predict_logits_from_preprocessed_data(data)[0]

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """Fold-ensembled segmentation logits; the ensembled QSM is exported on the side.

        Only cases that come with an output file get their QSM written (mqsm_predict always gives
        one); nnU-Net's in-memory entry points return the segmentation alone.
        """
        with self._network_outputs(qsm_only=False):
            combined = super().predict_logits_from_preprocessed_data(data)
        logits, qsm = combined[:-1], combined[-1]
        mask = data[self.channels.mask]
        item = self._current_item
        if item is not None and item.get("ofile") is not None:
            out_file = item["ofile"] + "_qsm" + self.dataset_json["file_ending"]
            export_qsm(qsm, mask, item["data_properties"], self.configuration_manager, self.plans_manager, out_file)
        return logits

    def predict_from_data_iterator(self, data_iterator: Iterable[dict], save_probabilities: bool = False,
                                   num_processes_segmentation_export: int = 3):
        """Stock loop; the iterator is only watched so the QSM export knows the current case."""
        try:
            return super().predict_from_data_iterator(self._watch(data_iterator), save_probabilities,
                                                      num_processes_segmentation_export)
        finally:
            self._current_item = None

    def _watch(self, data_iterator: Iterable[dict]) -> Iterator[dict]:
        for item in data_iterator:
            self._current_item = item
            yield item
