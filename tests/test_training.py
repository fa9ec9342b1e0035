"""The meta-training loop: History, skorch callbacks, early stopping, faults, interruption."""

import warnings

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, EarlyStopping, PrintLog

from sklearn_meta import MetaRegressor
from sklearn_meta.exceptions import NonFiniteLossWarning

from .conftest import FAST


class Recorder(Callback):
    def initialize(self):
        self.events = []
        return self

    def on_train_begin(self, net, **kwargs):
        self.events.append("begin")

    def on_grad_computed(self, net, named_parameters, **kwargs):
        self.events.append(("grad", len(named_parameters)))

    def on_epoch_end(self, net, **kwargs):
        self.events.append(("epoch", net.history[-1, "epoch"], net.history[-1, "train_loss"]))

    def on_train_end(self, net, **kwargs):
        self.events.append("end")


def test_skorch_callbacks_see_every_outer_update(sinusoids):
    X, y, groups, *_ = sinusoids
    recorder = Recorder()
    est = MetaRegressor(**FAST, callbacks=[("recorder", recorder)]).fit(X, y, groups=groups)
    epochs = [e for e in recorder.events if e[0] == "epoch"]
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    assert [e[1] for e in epochs] == list(range(1, 11))
    assert [e[2] for e in epochs] == est.loss_curve_
    assert ("grad", 4) in recorder.events


class StopAt(Callback):
    """Raises KeyboardInterrupt like Ctrl-C (and skorch's EarlyStopping) do."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if net.history[-1, "epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_interruption_keeps_the_last_completed_update(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 50}, callbacks=[StopAt(4)]).fit(X, y, groups=groups)
    assert est.n_iter_ == 4 and len(est.loss_curve_) == 4
    full = MetaRegressor(**{**FAST, "max_iter": 4}).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), full.predict(X_test))


def test_skorch_early_stopping_as_a_user_callback(sinusoids):
    X, y, groups, *_ = sinusoids
    stopper = EarlyStopping(monitor="train_loss", patience=1, threshold=1e9, sink=lambda *a: None)
    est = MetaRegressor(**{**FAST, "max_iter": 100}, callbacks=[stopper]).fit(X, y, groups=groups)
    assert est.n_iter_ == 2


def test_built_in_early_stopping_on_held_out_tasks(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 300}, early_stopping=True, n_iter_no_change=3, tol=1e9).fit(
        X, y, groups=groups
    )
    # tol is huge, so no update counts as an improvement after the first
    assert est.n_iter_ == 4
    assert all(np.isfinite(row["valid_loss"]) for row in est.history_)


def test_early_stopping_restores_the_best_meta_parameters(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    # With a huge tol only update 1 counts as an improvement: training stops at update 4
    # and the model must be the one after update 1.
    est = MetaRegressor(**{**FAST, "max_iter": 300}, early_stopping=True, n_iter_no_change=3, tol=1e9).fit(
        X, y, groups=groups
    )
    after_best = MetaRegressor(**{**FAST, "max_iter": 1}, early_stopping=True).fit(X, y, groups=groups)
    assert not np.allclose(
        est.predict(X_test),
        MetaRegressor(**{**FAST, "max_iter": 4}, early_stopping=True).fit(X, y, groups=groups).predict(X_test),
    )
    np.testing.assert_allclose(est.predict(X_test), after_best.predict(X_test), rtol=1e-6)


def test_early_stopping_needs_two_tasks():
    X, y = np.random.RandomState(0).normal(size=(20, 1)), np.zeros(20)
    with pytest.raises(ValueError, match="needs at least 2 tasks"):
        MetaRegressor(**FAST, early_stopping=True).fit(X, y)


def test_verbose_shows_a_progress_bar_and_zero_is_silent(sinusoids, capsys):
    X, y, groups, *_ = sinusoids
    MetaRegressor(**FAST).fit(X, y, groups=groups)
    assert capsys.readouterr() == ("", "")
    MetaRegressor(**{**FAST, "max_iter": 40}, verbose=1, early_stopping=True, tol=0).fit(X, y, groups=groups)
    bar = capsys.readouterr().err
    assert "meta-training" in bar and "40/40" in bar
    assert "train_loss=" in bar and "valid_loss=" in bar and "valid_score=" in bar


def test_verbose_two_prints_the_training_table(sinusoids, capsys):
    X, y, groups, *_ = sinusoids
    MetaRegressor(**{**FAST, "max_iter": 40}, verbose=2).fit(X, y, groups=groups)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "train_loss" in lines[0] and set(lines[1]) <= {"-", " "}
    epochs = [int(line.split()[0]) for line in lines[2:]]
    assert epochs == [1, 5, 10, 15, 20, 25, 30, 35, 40]


def test_validation_score_is_the_few_shot_score_of_the_held_out_tasks(sinusoids):
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**FAST, early_stopping=True, n_iter_no_change=100).fit(X, y, groups=groups)
    losses, scores = np.array(est.history_[:, "valid_loss"]), np.array(est.history_[:, "valid_score"])
    # On one fixed batch of held-out tasks, pooled R2 = 1 - SS_res / SS_tot with SS_tot fixed and
    # SS_res proportional to the mean squared error: the points lie on a line through (0, 1).
    slope = (1 - scores) / losses
    assert len(scores) == 10 and np.ptp(losses) > 0
    np.testing.assert_allclose(slope, slope[0], rtol=1e-4)


class PoisonAt(Callback):
    """Makes the meta-loss non-finite from a given update on, as a diverging model would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if net.history[-1, "epoch"] == self.epoch:
            with torch.no_grad():
                for p in net.module_.parameters():
                    p.fill_(float("nan"))


def test_non_finite_meta_loss_stops_with_the_last_finite_parameters(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    with pytest.warns(NonFiniteLossWarning, match="non-finite at iteration 4"):
        est = MetaRegressor(**{**FAST, "max_iter": 20}, callbacks=[PoisonAt(3)]).fit(X, y, groups=groups)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())
    assert np.isfinite(est.predict(X_test)).all()


def test_divergence_before_any_update_is_an_error(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.raises(ValueError, match="not finite at iteration 1, before any update"):
        MetaRegressor(**FAST, inner_lr=1e30, inner_steps=3).fit(X, y * 1e20, groups=groups)


def test_max_grad_norm_clips_the_meta_gradient(sinusoids):
    X, y, groups, *_ = sinusoids

    # SGD as meta-optimizer makes the step proportional to the (clipped) gradient.
    clipped = MetaRegressor(**FAST, meta_optimizer="sgd", max_grad_norm=1e-3).fit(X, y, groups=groups)
    free = MetaRegressor(**FAST, meta_optimizer="sgd").fit(X, y, groups=groups)
    start = MetaRegressor(**{**FAST, "max_iter": 0}).fit(X, y, groups=groups)
    moved = {
        name: sum(float((a - b).norm()) for a, b in zip(est.module_.parameters(), start.module_.parameters()))
        for name, est in [("clipped", clipped), ("free", free)]
    }
    assert moved["clipped"] <= 10 * 1e-3 * 1e-3 * 1.01  # 10 updates of lr * 1e-3 at most
    assert moved["free"] > moved["clipped"]


def test_print_log_as_a_user_callback(sinusoids):
    X, y, groups, *_ = sinusoids
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetaRegressor(**FAST, callbacks=[PrintLog(sink=lines.append)]).fit(X, y, groups=groups)
    assert len(lines) == 2 + 10 and "train_loss" in lines[0]  # header, rule, one row per update


def test_ctrl_c_during_fit_keeps_a_usable_estimator_at_its_last_update(sinusoids):
    import os
    import signal
    import threading

    X, y, groups, X_test, *_ = sinusoids
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        est = MetaRegressor(**{**FAST, "max_iter": 10**6}, compile=False).fit(X, y, groups=groups)
    finally:
        timer.cancel()
    assert 0 < est.n_iter_ < 10**6 and len(est.loss_curve_) == est.n_iter_
    # Deterministic training: the interrupted model is the model of its last completed update.
    same = MetaRegressor(**{**FAST, "max_iter": est.n_iter_}).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), same.predict(X_test))


def test_compile_switch(sinusoids):
    X, y, groups, *_ = sinusoids
    assert MetaRegressor(max_iter=10_000)._use_compile() and not MetaRegressor(max_iter=9_999)._use_compile()
    assert not MetaRegressor(max_iter=10_000, compile=False)._use_compile()
    assert MetaRegressor(max_iter=1, compile=True)._use_compile()


def test_compiled_training_gives_the_eager_parameters(sinusoids):
    # Slow (compilation takes tens of seconds on 2 cores), but it is the proof that the
    # compiled path is exact.
    X, y, groups, X_test, *_ = sinusoids
    settings = {**FAST, "hidden_layer_sizes": (8,), "max_iter": 5}
    eager = MetaRegressor(**settings, compile=False).fit(X, y, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback to eager would warn
        compiled = MetaRegressor(**settings, compile=True).fit(X, y, groups=groups)
    np.testing.assert_allclose(compiled.loss_curve_, eager.loss_curve_, rtol=1e-5)
    for (name, a), (_, b) in zip(compiled.module_.named_parameters(), eager.module_.named_parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
