"""nnU-Net's per-epoch log and progress plot, extended with the reconstruction terms.

nnU-Net's LocalLogger accepts only the keys it knows and plots loss, pseudo Dice, epoch time and
learning rate. mQSM trains two tasks, so the log also keeps the reconstruction loss and its two
terms (Eq. 5), the data-consistency term and an online QSM quality figure, and the plot gets a fourth panel for them.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("agg")
from matplotlib.figure import Figure  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

RECONSTRUCTION_LOG_KEYS = (
    "train_loss_seg",      # Dice + CE with deep supervision (Eq. 6)
    "train_loss_rec",      # L_rec = L_C + w * L_M (Eq. 5)
    "train_loss_c",        # consistency term L_C
    "train_loss_m",        # morphology term L_M
    "train_loss_dc",       # data-consistency term L_DC (dipole model vs measured field)
    "val_loss_rec",
    "val_loss_dc",
    "val_qsm_corr",        # Pearson r of QSM vs QSM- inside the mask, validation patches
    "val_field_explained",  # 1 - L_DC on validation patches (mQSMTrainer_QSM's checkpoint-selection score)
)


class MQSMLocalLogger(LocalLogger):
    """LocalLogger with the reconstruction keys registered and plotted. `segments` is false for a
    trainer without a segmentation (mQSMTrainer_QSM): nnU-Net's pseudo-Dice slot then carries the
    field explained, and progress_mqsm.png does not call it a Dice."""

    def __init__(self, verbose: bool = False, segments: bool = True):
        super().__init__(verbose)
        self.segments = segments
        for key in RECONSTRUCTION_LOG_KEYS:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the log; a checkpoint from a stock trainer gets empty reconstruction lists."""
        super().load_checkpoint(checkpoint)
        for key in RECONSTRUCTION_LOG_KEYS:
            self.my_fantastic_logging.setdefault(key, [])

    def plot_progress_png(self, output_folder: str) -> None:
        """nnU-Net's progress.png, plus `progress_mqsm.png` with the reconstruction curves."""
        super().plot_progress_png(output_folder)
        log = self.my_fantastic_logging
        n = min(len(v) for v in log.values())
        if n == 0:
            return
        epochs = list(range(n))
        fig = Figure(figsize=(12, 9))
        ax_loss, ax_quality = fig.subplots(2, 1, sharex=True)
        ax_loss.plot(epochs, log["train_loss_seg"][:n], label="segmentation loss (train)")
        ax_loss.plot(epochs, log["train_loss_rec"][:n], label="L_rec (train)")
        ax_loss.plot(epochs, log["train_loss_c"][:n], ls="--", label="L_C (train)")
        ax_loss.plot(epochs, log["train_loss_m"][:n], ls=":", label="L_M (train)")
        ax_loss.plot(epochs, log["train_loss_dc"][:n], ls="-.", label="L_DC (train)")
        ax_loss.plot(epochs, log["val_loss_rec"][:n], label="L_rec (val)")
        ax_loss.plot(epochs, log["val_loss_dc"][:n], ls="-.", label="L_DC (val)")
        ax_loss.set_ylabel("loss")
        ax_loss.legend(loc="upper right")
        ax_quality.plot(epochs, log["val_qsm_corr"][:n], color="tab:purple", label="QSM vs QSM- r (val)")
        ax_quality.plot(epochs, log["val_field_explained"][:n], color="tab:orange", ls="--",
                        label="field explained, 1 - L_DC (val)")
        if self.segments:
            ax_quality.plot(epochs, log["mean_fg_dice"][:n], color="tab:green", ls=":", label="pseudo Dice (val)")
        ax_quality.set_ylim(-0.05, 1.05)
        ax_quality.set_xlabel("epoch")
        ax_quality.legend(loc="lower right")
        fig.suptitle("mQSM training: reconstruction (Eq. 5) and segmentation")
        fig.tight_layout()
        fig.savefig(f"{output_folder}/progress_mqsm.png", dpi=80)
