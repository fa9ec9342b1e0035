"""The meta-training loop: History, skorch callbacks, early stopping, faults, interruption."""

import types
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback, EarlyStopping, PrintLog

from sklearn_meta import MetaRegressor
from sklearn_meta.estimators._setup import compile_key, use_compile
from sklearn_meta.exceptions import NonFiniteLossWarning
from sklearn_meta.heads import BayesianRidgeHead, GradientHead
from sklearn_meta.training import _compiling

from .conftest import FAST

# The training loop's mechanics, on the gradient path (one meta learning rate, inner steps).
FAST = {**FAST, "head": "gradient"}


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
        MetaRegressor(**{**FAST, "head": GradientHead(inner_lr=1e30, inner_steps=3)}).fit(X, y * 1e20, groups=groups)


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

    class CtrlCSoon(Callback):
        """Ctrl-C from another thread 0.3 s after training starts, wherever the loop then is.

        (Started with training, not with fit: in a fresh process fit's preparation can take longer
        than a fixed delay, and a Ctrl-C there leaves fit before training, as it should.)
        """

        def on_train_begin(self, net, **kwargs):
            self.timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
            self.timer.start()

    X, y, groups, X_test, *_ = sinusoids
    ctrl_c = CtrlCSoon()
    # Python's own Ctrl-C handler, whatever an earlier test (or library it used) installed: in the full suite
    # on a fresh clone the signal was otherwise lost.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        est = MetaRegressor(**{**FAST, "max_iter": 20_000}, compile=False, callbacks=[ctrl_c]).fit(X, y, groups=groups)
    finally:
        ctrl_c.timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert 0 < est.n_iter_ < 20_000 and len(est.loss_curve_) == est.n_iter_
    # Deterministic training: the interrupted model is the model of its last completed update.
    same = MetaRegressor(**{**FAST, "max_iter": est.n_iter_}, compile=False).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), same.predict(X_test))


def sigint_after_step(update, monkeypatch):
    """SIGINT right after the optimizer step of ``update``, in the check of its stepped parameters."""
    import signal

    from sklearn_meta.training import _loop

    real, calls = _loop._all_finite, []

    def check(params):
        calls.append(1)
        if len(calls) == update:
            signal.raise_signal(signal.SIGINT)
        return real(params)

    monkeypatch.setattr(_loop, "_all_finite", check)


def test_ctrl_c_right_after_the_step_keeps_the_update_and_its_row(sinusoids, monkeypatch):
    # The window the timed test above hits about once in a hundred runs (CI, stop 15): Ctrl-C lands
    # after optimizer.step() changed the model, before its history row is written. Here it lands
    # there on purpose, in the finiteness check of update 3's stepped parameters.
    import signal

    X, y, groups, X_test, *_ = sinusoids
    sigint_after_step(3, monkeypatch)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        est = MetaRegressor(**{**FAST, "max_iter": 50}, compile=False).fit(X, y, groups=groups)
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    # The update was made, so it is kept, with its row: the model of 3 updates, and n_iter_ says 3.
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    same = MetaRegressor(**{**FAST, "max_iter": 3}, compile=False).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), same.predict(X_test))


def test_a_users_own_sigint_handler_gets_the_signal_and_is_restored(sinusoids, monkeypatch):
    # fit holds Ctrl-C only around the optimizer step; it passes the signal on to the handler it found
    # (here one that counts instead of raising, so training goes on), and puts that handler back.
    import signal

    received = []

    def handler(signum, frame):
        received.append(signum)

    X, y, groups, *_ = sinusoids
    sigint_after_step(3, monkeypatch)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        est = MetaRegressor(**FAST, compile=False).fit(X, y, groups=groups)
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert received == [signal.SIGINT] and est.n_iter_ == FAST["max_iter"]


@pytest.fixture
def compile_markers(tmp_path, monkeypatch):
    """An empty folder for the markers of compiled fits (never the user's own)."""
    monkeypatch.setattr(_compiling, "_folder", lambda: tmp_path)
    return tmp_path


def test_compile_switch(sinusoids, compile_markers):
    ridge, recomputing = BayesianRidgeHead(), GradientHead(recompute_inner=True)
    assert use_compile(MetaRegressor(max_iter=10_000), ridge) and not use_compile(MetaRegressor(max_iter=9_999), ridge)
    assert not use_compile(MetaRegressor(max_iter=10_000, compile=False), ridge)
    assert use_compile(MetaRegressor(max_iter=1, compile=True), ridge)
    assert not use_compile(MetaRegressor(max_iter=1, compile=True), recomputing)  # its backward pass runs eagerly


def _plan(spec=None, head=None, n_tasks=25, n_support=10, n_query=10, ragged=False):
    """What the compile key reads of a training plan."""
    spec = {"hidden_layer_sizes": [40, 40], "activation": "tanh"} if spec is None else spec
    head = BayesianRidgeHead() if head is None else head
    return types.SimpleNamespace(spec=spec, head=head, n_tasks=n_tasks, n_support=n_support, n_query=n_query,
                                 ragged=ragged, device="cpu")  # fmt: skip


def test_auto_compiles_shorter_fits_once_torch_has_cached_their_shapes(compile_markers):
    est = MetaRegressor(max_iter=1000)
    key = compile_key(est, _plan())
    assert not use_compile(est, BayesianRidgeHead(), key)  # a first compilation (about a minute) does not pay
    _compiling.mark_warm(key)
    assert use_compile(est, BayesianRidgeHead(), key)  # a cached one (a few seconds) does
    assert not use_compile(MetaRegressor(max_iter=_compiling.WARM_MIN_ITER - 1), BayesianRidgeHead(), key)
    assert not use_compile(MetaRegressor(max_iter=1000, compile=False), BayesianRidgeHead(), key)


def test_the_compile_key_names_the_shapes_the_architecture_and_the_head():
    est = MetaRegressor()
    key = compile_key(est, _plan())
    assert key == compile_key(clone(est), _plan())
    assert key != compile_key(est, _plan(n_support=5))
    assert key != compile_key(est, _plan(n_tasks=32))
    assert key != compile_key(est, _plan(ragged=True))  # padded batches carry masks: another graph
    assert key != compile_key(est, _plan(spec={"hidden_layer_sizes": [40], "activation": "tanh"}))
    assert key != compile_key(est, _plan(head=GradientHead()))
    assert key != compile_key(est, _plan(head=BayesianRidgeHead(meta_lr_factor=2.0)))
    assert compile_key(est, _plan(head=GradientHead(inner_lr=0.1))) != compile_key(est, _plan(head=GradientHead()))
    # a user module is named by where it is defined, not by its address in this process
    spec = {"module": torch.nn.Linear, "module_kwargs": {}}
    assert compile_key(est, _plan(spec=spec)) == compile_key(est, _plan(spec=dict(spec)))


@pytest.mark.torch_only
def test_compiled_training_gives_the_eager_parameters(sinusoids, compile_markers):
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
    assert len(list(compile_markers.iterdir())) == 1  # the compiled fit left its marker; the eager one none


# --- skorch callbacks get a real net -------------------------------------------------------


def test_lr_scheduler_steps_the_meta_optimizer(sinusoids):
    # Bug: callbacks received a proxy without optimizer_, so LRScheduler failed inside fit.
    from skorch.callbacks import LRScheduler
    from torch.optim.lr_scheduler import StepLR

    X, y, groups, *_ = sinusoids
    scheduler = LRScheduler(policy=StepLR, step_size=2, gamma=0.5)
    est = MetaRegressor(**{**FAST, "max_iter": 6}, meta_lr=0.01, callbacks=[("lr", scheduler)])
    est.fit(X, y, groups=groups)
    np.testing.assert_allclose(est.history_[:, "event_lr"], [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
    # the meta-optimizer really took the smaller steps: SGD steps halve with the rate
    plain = MetaRegressor(**{**FAST, "max_iter": 6}, meta_lr=0.01).fit(X, y, groups=groups)
    assert est.loss_curve_[:3] == plain.loss_curve_[:3] and est.loss_curve_[3:] != plain.loss_curve_[3:]


def test_checkpoint_and_load_init_state_resume_training(sinusoids, tmp_path):
    from skorch.callbacks import Checkpoint, LoadInitState

    X, y, groups, X_test, *_ = sinusoids
    checkpoint = Checkpoint(monitor="train_loss_best", dirname=str(tmp_path))
    first = MetaRegressor(**{**FAST, "max_iter": 5}, callbacks=[checkpoint]).fit(X, y, groups=groups)
    assert (tmp_path / "params.pt").exists() and (tmp_path / "optimizer.pt").exists()
    assert any(first.history_[:, "event_cp"])
    best = int(np.argmin(first.loss_curve_))
    # A second fit loads the best checkpoint (parameters, meta-optimizer, history) and goes on.
    resumed = MetaRegressor(**{**FAST, "max_iter": 3}, callbacks=[Checkpoint(monitor="train_loss_best",
                            dirname=str(tmp_path)), LoadInitState(checkpoint)])  # fmt: skip
    resumed.fit(X, y, groups=groups)
    assert resumed.n_iter_ == best + 1 + 3
    assert resumed.loss_curve_[: best + 1] == first.loss_curve_[: best + 1]
    assert not np.allclose(resumed.predict(X_test), first.predict(X_test))


def test_gradient_norm_clipping_callback_bounds_the_step(sinusoids):
    from skorch.callbacks import GradientNormClipping

    X, y, groups, *_ = sinusoids
    start = MetaRegressor(**{**FAST, "max_iter": 0}).fit(X, y, groups=groups)
    clipped = MetaRegressor(**FAST, meta_optimizer="sgd", callbacks=[GradientNormClipping(1e-3)])
    clipped.fit(X, y, groups=groups)
    moved = sum(float((a - b).norm()) for a, b in zip(clipped.module_.parameters(), start.module_.parameters()))
    assert 0 < moved <= 10 * 1e-3 * 1e-3 * 1.01


class CountUpdates(Callback):
    """Passed as a class: skorch instantiates it; it counts into a class attribute."""

    seen: list = []

    def on_epoch_end(self, net, **kwargs):
        CountUpdates.seen.append((net.history[-1, "epoch"], type(net.optimizer_).__name__))


def test_callback_classes_and_named_pairs_are_handled_as_skorch_does(sinusoids):
    X, y, groups, *_ = sinusoids
    CountUpdates.seen = []
    MetaRegressor(**{**FAST, "max_iter": 3}, callbacks=[CountUpdates]).fit(X, y, groups=groups)
    assert CountUpdates.seen == [(1, "Adam"), (2, "Adam"), (3, "Adam")]
    lines = []
    est = MetaRegressor(**{**FAST, "max_iter": 2}, callbacks=[("log", PrintLog(sink=lines.append))])
    est.fit(X, y, groups=groups)
    assert "dur" in lines[0]  # skorch's default EpochTimer ran
    assert set(est.history_[-1]) >= {"epoch", "dur", "train_loss", "train_loss_best", "batches"}
    with pytest.raises(ValueError, match="unique"):
        MetaRegressor(**FAST, callbacks=[("a", PrintLog()), ("a", PrintLog())]).fit(X, y, groups=groups)


# --- faults ---------------------------------------------------------------------------------


class HugeGradientAt(Callback):
    """Makes the meta-optimizer's step overflow at one update, as a diverging meta-optimizer would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_grad_computed(self, net, named_parameters, **kwargs):
        if net.history[-1, "epoch"] == self.epoch:
            for _, p in named_parameters:
                p.grad.fill_(3e38)


@pytest.mark.parametrize("max_iter", [2, 20], ids=["last-update", "mid-training"])
def test_overflowing_update_is_undone_and_not_counted(sinusoids, max_iter):
    # Bug: the parameters were rolled back but the update's history row kept, and the last
    # update of a fit gave no warning. (meta_lr=10 diverges by itself from update 3 on.)
    X, y, groups, X_test, *_ = sinusoids
    settings = {**FAST, "meta_optimizer": "sgd", "meta_lr": 10.0}
    with pytest.warns(NonFiniteLossWarning, match="non-finite at iteration 2"):
        est = MetaRegressor(**{**settings, "max_iter": max_iter}, callbacks=[HugeGradientAt(2)])
        est.fit(X, y, groups=groups)
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 1 and len(est.history_) == 1
    same = MetaRegressor(**{**settings, "max_iter": 1}).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), same.predict(X_test))


class HugeLearningRateAt(Callback):
    """Sets the meta learning rate beyond float32's range at one update, as a runaway schedule would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_grad_computed(self, net, **kwargs):
        if net.history[-1, "epoch"] == self.epoch:
            for group in net.optimizer_.param_groups:
                group["lr"] = 3e38


@pytest.mark.parametrize("head", ["ridge", "gradient"])
def test_a_meta_lr_beyond_float_range_is_a_clear_error_and_keeps_the_model(sinusoids, head):
    # Bug: torch's RuntimeError ("value cannot be converted to type float without overflow") escaped
    # from the meta-optimizer's step.
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "head": head}).fit(X, y, groups=groups)
    before = est.predict(X_test)
    with pytest.raises(ValueError, match="overflowed the float32 range at iteration 1.*Lower meta_lr"):
        est.set_params(meta_lr=3e38).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), before)
    assert est.n_iter_ == FAST["max_iter"]


def test_a_step_overflowing_mid_training_stops_with_the_last_finite_parameters(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    with pytest.warns(NonFiniteLossWarning, match="overflowed the float32 range at iteration 3"):
        est = MetaRegressor(**FAST, callbacks=[HugeLearningRateAt(3)]).fit(X, y, groups=groups)
    assert est.n_iter_ == 2 and len(est.history_) == 2
    same = MetaRegressor(**{**FAST, "max_iter": 2}).fit(X, y, groups=groups)
    np.testing.assert_array_equal(est.predict(X_test), same.predict(X_test))


def test_warnings_point_at_the_callers_line(sinusoids):
    X, y, groups, *_ = sinusoids
    with pytest.warns(NonFiniteLossWarning) as record:
        MetaRegressor(**{**FAST, "meta_optimizer": "sgd", "meta_lr": 10.0}, callbacks=[HugeGradientAt(2)]).fit(
            X, y, groups=groups
        )
    assert record[0].filename == __file__
    from sklearn_meta.exceptions import SingleTaskWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MetaRegressor(**FAST).fit(X[:40], y[:40])
    single = [w for w in caught if issubclass(w.category, SingleTaskWarning)]
    assert single and single[0].filename == __file__


# --- warm start -------------------------------------------------------------------------------


def test_warm_start_continues_meta_training(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 3}, warm_start=True).fit(X, y, groups=groups)
    first_curve, first_pred = list(est.loss_curve_), est.predict(X_test)
    est.fit(X, y, groups=groups)
    assert est.n_iter_ == 6 and est.history_[:, "epoch"] == [1, 2, 3, 4, 5, 6]
    assert est.loss_curve_[:3] == first_curve
    assert not np.allclose(est.predict(X_test), first_pred)
    cold = MetaRegressor(**{**FAST, "max_iter": 3}).fit(X, y, groups=groups)
    cold.fit(X, y, groups=groups)
    assert cold.n_iter_ == 3 and cold.loss_curve_ == first_curve  # without warm_start: from scratch


def test_warm_start_refuses_a_changed_network_and_keeps_the_model(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 3}, warm_start=True).fit(X, y, groups=groups)
    before = est.predict(X_test)
    with pytest.raises(ValueError, match="warm_start=True .* network changed"):
        est.set_params(hidden_layer_sizes=(7,)).fit(X, y, groups=groups)
    est.set_params(hidden_layer_sizes=FAST["hidden_layer_sizes"])
    with pytest.raises(ValueError, match="head changed"):
        est.set_params(head=GradientHead(inner_optimizer="meta-sgd")).fit(X, y, groups=groups)
    assert est.n_iter_ == 3
    np.testing.assert_array_equal(est.predict(X_test), before)


def test_interrupted_warm_start_leaves_the_fitted_model_untouched(sinusoids):
    X, y, groups, X_test, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 3}, warm_start=True).fit(X, y, groups=groups)
    before = est.predict(X_test)
    with pytest.raises(ValueError, match="not finite at iteration 4, before any update"):
        est.fit(X, y * 1e30, groups=groups)  # the first update of the continued fit overflows
    np.testing.assert_array_equal(est.predict(X_test), before)
    assert est.n_iter_ == 3


# --- the meta-learned state ---------------------------------------------------------------------


class DoubleUnderscoreNames(torch.nn.Module):
    """Attribute names with "__" in them, which MetaModel used to rewrite to "."."""

    def __init__(self, n_features_in):
        super().__init__()
        self.enc__0 = torch.nn.Linear(n_features_in, 8)
        self.out = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.out(torch.relu(self.enc__0(x)))


def test_parameter_names_with_double_underscores_survive_meta_sgd(sinusoids):
    X, y, groups, X_test, y_test, _ = sinusoids
    settings = {**FAST, "head": GradientHead(inner_optimizer="meta-sgd")}
    est = MetaRegressor(**settings, module=DoubleUnderscoreNames).fit(X, y, groups=groups)
    names = {name for name, _ in est.module_.network.named_parameters()}
    body = {"body.enc__0.weight", "body.enc__0.bias", "body.out.weight", "body.out.bias"}
    assert set(est.module_.head_meta()) == names == body | {"head.weight", "head.bias"}
    before = est.predict(X_test)
    assert not np.allclose(est.partial_adapt(X_test[:10], y_test[:10]).predict(X_test), before)


def test_non_finite_features_of_a_closed_form_head_stop_training_with_a_warning(sinusoids):
    # a NaN reaching the ridge head's Cholesky factorisation is a non-finite loss, not a linear-algebra error
    X, y, groups, *_ = sinusoids
    with pytest.warns(NonFiniteLossWarning, match="non-finite at iteration 4"):
        est = MetaRegressor(**{**FAST, "head": "ridge", "max_iter": 20}, callbacks=[PoisonAt(3)])
        est.fit(X, y, groups=groups)
    assert est.n_iter_ == 3 and all(np.isfinite(est.loss_curve_))
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())


def test_each_update_records_one_training_batch_and_one_validation_batch(sinusoids):
    # skorch's on_batch_begin opens the batch entry; the loop records into it (no empty entries).
    X, y, groups, *_ = sinusoids
    est = MetaRegressor(**{**FAST, "max_iter": 3, "meta_batch_size": 5}, early_stopping=True).fit(X, y, groups=groups)
    for row in est.history_:
        train, valid = row["batches"]
        assert set(train) == {"train_loss", "train_batch_size"} and train["train_batch_size"] == 5
        assert set(valid) == {"valid_loss", "valid_score", "valid_batch_size"}
