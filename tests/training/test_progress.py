"""MQSMLocalLogger: nnU-Net's log with the reconstruction keys, restored from stock checkpoints, plotted."""
import matplotlib.image

from mqsm_nnunet.training.progress import RECONSTRUCTION_LOG_KEYS, MQSMLocalLogger


def _log_epochs(logger: MQSMLocalLogger, n: int) -> None:
    for epoch in range(n):
        for key in ("mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses", "lrs", *RECONSTRUCTION_LOG_KEYS):
            logger.log(key, float(epoch), epoch)
        logger.log("dice_per_class_or_region", [0.1 * epoch, 0.2 * epoch], epoch)
        logger.log("epoch_start_timestamps", 10.0 * epoch, epoch)
        logger.log("epoch_end_timestamps", 10.0 * epoch + 1, epoch)


def test_reconstruction_curves_are_logged_and_plotted(tmp_path):
    logger = MQSMLocalLogger()
    _log_epochs(logger, 3)
    assert logger.get_value("train_loss_dc", 2) == 2.0
    logger.plot_progress_png(str(tmp_path))
    image = matplotlib.image.imread(tmp_path / "progress_mqsm.png")
    assert image.shape[0] > 100 and image.std() > 0          # a drawn figure, not a blank canvas
    assert (tmp_path / "progress.png").is_file()             # nnU-Net's own plot still written


def test_a_stock_checkpoint_log_gets_empty_reconstruction_lists():
    stock = MQSMLocalLogger()
    log = {k: v for k, v in stock.get_checkpoint().items() if k not in RECONSTRUCTION_LOG_KEYS}
    restored = MQSMLocalLogger()
    restored.load_checkpoint(log)
    assert all(restored.my_fantastic_logging[key] == [] for key in RECONSTRUCTION_LOG_KEYS)
