"""Progress reporting for meta-training, as skorch callbacks."""

from __future__ import annotations

from skorch.callbacks import Callback, PassthroughScoring, PrintLog

__all__ = ["MetaProgressBar", "OneBatchScoring", "ThinnedPrintLog"]


class OneBatchScoring(PassthroughScoring):
    """skorch's ``PassthroughScoring`` for epochs of one batch: the epoch's score is that batch's.

    It reads the epoch-level entry the training loop records instead of
    averaging over the batch entries, which costs a fifth of an update on a
    small network, and records ``<name>_best`` as skorch does.
    """

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if self.name not in row:
            return
        score = row[self.name]
        is_best = self._is_best_score(score)
        if is_best:
            self.best_score_ = score
        if is_best is not None:
            net.history.record(f"{self.name}_best", bool(is_best))


class ThinnedPrintLog(PrintLog):
    """skorch's ``PrintLog`` table, printing the first and every ``every``-th outer update."""

    def __init__(self, every: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.every = every

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1, "epoch"]
        if epoch == 1 or epoch % self.every == 0:
            super().on_epoch_end(net, **kwargs)


class MetaProgressBar(Callback):
    """A progress bar over the outer updates, showing the latest meta-loss and validation results.

    Parameters
    ----------
    total : int
        Number of outer updates planned (``max_iter``).
    keys : tuple of str
        History entries shown beside the bar, when present.
    file : file-like, default=None
        Where the bar is drawn; standard error by default.
    """

    def __init__(self, total: int, keys=("train_loss", "valid_loss", "valid_score"), file=None):
        self.total, self.keys, self.file = total, keys, file

    def on_train_begin(self, net, **kwargs):
        from tqdm.auto import tqdm

        self.bar_ = tqdm(total=self.total, desc="meta-training", unit="update", file=self.file, leave=True)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self.bar_.set_postfix({k: f"{row[k]:.4g}" for k in self.keys if k in row}, refresh=False)
        self.bar_.update(1)

    def on_train_end(self, net, **kwargs):
        self.bar_.close()
