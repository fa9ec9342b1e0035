"""The shared scikit-learn front of MetaRegressor and MetaClassifier.

The base class owns the constructor arguments, validation, the meta-training
lifecycle, few-shot adaptation, persistence and the grouped few-shot score;
subclasses supply the target encoding, the loss and the metric.
"""

from __future__ import annotations

import contextlib
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping
from skorch.history import History

from ._engine import Learner, adapt_task, adapt_tasks, predict_tasks
from ._network import ACTIVATIONS, build_network
from ._persistence import (
    check_saved_with,
    history_from_state,
    history_to_state,
    saved_with,
    to_numpy_tree,
    to_torch_tree,
)
from ._tasks import GroupedRows, TaskSampler, encode_groups
from ._training import MetaModel, MetaProgressBar, ThinnedPrintLog, TrainingView, train
from .exceptions import SingleTaskWarning
from .optim import resolve_inner_optimizer

META_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

# Fitted attributes that hold tensors; saved as numpy arrays.
_TENSOR_ATTRIBUTES = ("inner_meta_params_", "adapted_params_", "inner_state_")

# "auto" compiles the meta-loss from this many outer updates on.
_AUTO_COMPILE_MIN_ITER = 10_000

# Rows per forward pass in predict, to keep memory bounded on large inputs.
_PREDICT_CHUNK = 65536


@contextlib.contextmanager
def _atomic(estimator):
    """Restore the estimator's attributes if the block raises: a failed call changes nothing.

    Fitted tensors are never modified in place, so a shallow copy suffices.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def _as_float_tensor(X, device) -> torch.Tensor:
    # torch.tensor copies, which accepts read-only and negatively strided arrays alike.
    return torch.tensor(np.asarray(X, dtype=np.float32), device=device)


def _validate_groups(groups, n_samples: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.ndim == 2 and groups.shape[1] == 1:
        groups = groups.ravel()
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-dimensional (one task id per row), got shape {groups.shape}.")
    if len(groups) != n_samples:
        raise ValueError(f"groups has {len(groups)} entries but X has {n_samples} rows; give one task id per row.")
    if groups.dtype.kind == "f" and not np.isfinite(groups).all():
        raise ValueError("groups contains NaN or infinity; every row needs a task id.")
    if groups.dtype.kind == "O" and any(g is None or (isinstance(g, float) and not np.isfinite(g)) for g in groups):
        raise ValueError("groups contains None or NaN; every row needs a task id.")
    return groups


def _describe(labels, limit: int = 5) -> str:
    shown = ", ".join(repr(x.item() if isinstance(x, np.generic) else x) for x in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


class BaseMetaEstimator(BaseEstimator):
    """Base class of the meta-learning estimators; not for direct use."""

    __metadata_request__fit = {"groups": True}
    __metadata_request__score = {"groups": True}

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "module": [callable, None],
        "module_kwargs": [dict, None],
        "inner_optimizer": [
            StrOptions({"sgd", "adam", "meta-sgd"}),
            HasMethods(["meta_parameters", "init", "update"]),
        ],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "adapt_steps": [Interval(Integral, 0, None, closed="left"), None],
        "first_order": ["boolean"],
        "meta_optimizer": [StrOptions(set(META_OPTIMIZERS)), callable],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_support": [Interval(Integral, 1, None, closed="left"), Interval(RealNotInt, 0, 1, closed="neither")],
        "n_query": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "compile": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "callbacks": [list, None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(40, 40),
        activation="relu",
        *,
        module=None,
        module_kwargs=None,
        inner_optimizer="sgd",
        inner_lr=0.01,
        inner_steps=1,
        adapt_steps=None,
        first_order=False,
        meta_optimizer="adam",
        meta_lr=1e-3,
        meta_batch_size=25,
        n_support=10,
        n_query=None,
        max_iter=1000,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        max_grad_norm=None,
        compile="auto",
        random_state=None,
        device="cpu",
        verbose=0,
        callbacks=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.module = module
        self.module_kwargs = module_kwargs
        self.inner_optimizer = inner_optimizer
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.adapt_steps = adapt_steps
        self.first_order = first_order
        self.meta_optimizer = meta_optimizer
        self.meta_lr = meta_lr
        self.meta_batch_size = meta_batch_size
        self.n_support = n_support
        self.n_query = n_query
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.max_grad_norm = max_grad_norm
        self.compile = compile
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.callbacks = callbacks

    # ------------------------------------------------------------------
    # What subclasses provide

    def _validate_targets(self, X, y, reset: bool):
        """Validate ``X, y``; return ``X`` and the encoded targets as numpy arrays."""
        raise NotImplementedError

    def _target_tensor(self, y_encoded, device) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _n_outputs(self, y_encoded) -> int:
        """Width of the network's output layer."""
        raise NotImplementedError

    def _batch_score(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The estimator's score over query rows of a task batch (tasks first)."""
        raise NotImplementedError

    def _make_sampler(self, X_t, y_t, y_encoded, groups, generator, device):
        """Return the training sampler and a fixed validation batch (or ``None``)."""
        return self._grouped_sampler(X_t, y_t, groups, generator, device)

    # ------------------------------------------------------------------
    # Meta-training

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Meta-train on a collection of tasks.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of all training tasks.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        groups : array-like of shape (n_samples,), default=None
            Task id of every row: any hashable labels, in any order. Without
            it all rows are one task (with a :class:`SingleTaskWarning`).

        Returns
        -------
        self : object
            The meta-trained estimator, with no adaptation.
        """
        with _atomic(self):
            self._fit(X, y, groups)
        return self

    def _fit(self, X, y, groups):
        X, y_encoded = self._validate_targets(X, y, reset=True)
        device = self._resolve_device()
        rng = check_random_state(self.random_state)
        net_seed, sample_seed = (int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2))
        generator = torch.Generator(device=device)
        generator.manual_seed(sample_seed)

        X_t = _as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        n_outputs = self._n_outputs(y_encoded)
        sampler, validation_batch = self._make_sampler(X_t, y_t, y_encoded, groups, generator, device)
        spec = self._network_spec(X.shape[1], n_outputs)
        network = build_network(spec, net_seed, device)
        inner = resolve_inner_optimizer(self.inner_optimizer, self.inner_lr)
        model = MetaModel(network, inner.meta_parameters(dict(network.named_parameters())))
        learner = Learner(network, dict(network.named_buffers()), self._loss, inner)
        history = History()
        view = TrainingView(self, model, history)
        validate = None
        if validation_batch is not None:
            validate = self._validation_function(learner, model, validation_batch)
        n_iter = train(
            view,
            learner,
            self._make_meta_optimizer(model.parameters()),
            lambda: sampler.sample(self.meta_batch_size, generator),
            max_iter=self.max_iter,
            n_steps=self.inner_steps,
            first_order=self.first_order,
            callbacks=self._training_callbacks(),
            validate=validate,
            max_grad_norm=self.max_grad_norm,
            compile=self._use_compile(),
        )
        for p in model.parameters():
            p.requires_grad_(False)
        self.module_ = network
        self.inner_optimizer_ = inner
        self.inner_meta_params_ = {k: v.detach() for k, v in model.inner_meta().items()}
        self.n_iter_ = n_iter
        self.history_ = history
        self.loss_curve_ = [row["train_loss"] for row in history]
        self.n_outputs_ = n_outputs
        self.device_ = str(device)
        self._network_spec_ = spec
        self._reset_adaptation_state()

    def _network_spec(self, n_features_in: int, n_outputs: int) -> dict:
        spec = {"n_features_in": int(n_features_in), "n_outputs": int(n_outputs)}
        if self.module is None:
            sizes = self.hidden_layer_sizes
            sizes = [sizes] if isinstance(sizes, Integral) else [int(s) for s in sizes]
            if any(s < 1 for s in sizes):
                raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}.")
            spec.update(hidden_layer_sizes=sizes, activation=self.activation)
        else:
            spec.update(module=self.module, module_kwargs=dict(self.module_kwargs or {}))
        return spec

    def _use_compile(self) -> bool:
        # Compiling takes about a minute on a 2-core CPU and saves a few ms per update:
        # "auto" compiles only fits long enough to pay that back.
        if self.compile == "auto":
            return self.max_iter >= _AUTO_COMPILE_MIN_ITER
        return bool(self.compile)

    def _resolve_device(self) -> torch.device:
        if str(self.device) == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={self.device!r} is not a torch device; use 'cpu', 'cuda' or 'auto'.") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but no CUDA GPU is available; use 'cpu' or 'auto'.")
        return device

    def _make_meta_optimizer(self, parameters):
        factory = self.meta_optimizer
        if isinstance(factory, str):
            factory = META_OPTIMIZERS[factory]
        return factory(parameters, lr=self.meta_lr)

    def _training_callbacks(self) -> list:
        callbacks = []
        if self.verbose == 1:
            callbacks.append(MetaProgressBar(self.max_iter))
        elif self.verbose >= 2:
            callbacks.append(ThinnedPrintLog(max(1, 10 // self.verbose)))
        if self.early_stopping:
            callbacks.append(
                EarlyStopping(
                    monitor="valid_loss",
                    patience=self.n_iter_no_change,
                    threshold=self.tol,
                    threshold_mode="abs",
                    load_best=True,
                    sink=print if self.verbose else _silent,
                )
            )
        for cb in self.callbacks or []:
            cb = cb[1] if isinstance(cb, tuple) else cb
            callbacks.append(cb)
        for cb in callbacks:
            cb.initialize()
        return callbacks

    def _grouped_sampler(self, X_t, y_t, groups, generator, device):
        n_samples = X_t.shape[0]
        if groups is None:
            codes, labels = np.zeros(n_samples, dtype=np.int64), np.array([0])
        else:
            codes, labels = encode_groups(_validate_groups(groups, n_samples))
        if len(labels) == 1:
            warnings.warn(
                f"fit() received {'no groups' if groups is None else 'a single task'}: all {n_samples} rows "
                "are treated as one task and n_support is capped at half of them. Pass groups=<task id of "
                "each row>. Inside GridSearchCV, Pipeline or cross_validate, enable metadata routing with "
                "sklearn.set_config(enable_metadata_routing=True), or scikit-learn drops groups.",
                SingleTaskWarning,
                stacklevel=4,
            )
        tasks = GroupedRows(codes, device)
        n_support, n_query = self._split_sizes(tasks.sizes, labels)
        pool = torch.arange(tasks.n_groups, device=device)
        validation_batch = None
        if self.early_stopping:
            if tasks.n_groups < 2:
                raise ValueError("early_stopping holds out whole tasks for validation and needs at least 2 tasks.")
            n_valid = min(tasks.n_groups - 1, max(1, round(self.validation_fraction * tasks.n_groups)))
            pool = pool[torch.randperm(tasks.n_groups, generator=generator, device=device)]
            valid = TaskSampler(X_t, y_t, tasks, pool[:n_valid], n_support, n_query)
            validation_batch = valid.fixed(generator)
            pool = pool[n_valid:]
        self.n_support_, self.n_query_ = n_support, n_query
        return TaskSampler(X_t, y_t, tasks, pool, n_support, n_query), validation_batch

    def _split_sizes(self, sizes: np.ndarray, labels) -> tuple[int, int]:
        smallest = int(sizes.min())
        n_support = self.n_support
        if not isinstance(n_support, Integral):
            n_support = max(1, int(n_support * smallest))
        if len(sizes) == 1:
            n_support = min(n_support, smallest // 2)
            if n_support < 1:
                raise ValueError(
                    f"Meta-training needs at least 2 samples (1 support, 1 query); got n_samples = {smallest}."
                )
        else:
            too_small = np.flatnonzero(sizes < n_support + 1)
            if len(too_small):
                raise ValueError(
                    f"{len(too_small)} task(s) have fewer than n_support + 1 = {n_support + 1} rows "
                    f"(task ids {_describe(labels[too_small])}). Lower n_support or drop those tasks."
                )
        available = smallest - n_support
        n_query = available if self.n_query is None else self.n_query
        if n_query > available:
            raise ValueError(
                f"n_query={n_query} but the smallest task has only {available} rows left after its "
                f"{n_support} support rows. Lower n_query or n_support, or leave n_query=None."
            )
        return int(n_support), int(n_query)

    def _validation_function(self, learner, model, batch):
        n_steps = self._adapt_steps()

        def validate():
            adapted = adapt_tasks(
                learner, model.meta_params(), model.inner_meta(), batch.x_support, batch.y_support, n_steps
            )
            with torch.no_grad():
                output = predict_tasks(learner, adapted, batch.x_query)
                loss = torch.func.vmap(learner.loss)(output, batch.y_query).mean()
                score = self._batch_score(output, batch.y_query)
            return {"valid_loss": loss.item(), "valid_score": score.item()}

        return validate

    # ------------------------------------------------------------------
    # Adaptation and prediction

    def _adapt_steps(self) -> int:
        return self.inner_steps if self.adapt_steps is None else self.adapt_steps

    def _learner(self) -> Learner:
        return Learner(self.module_, dict(self.module_.named_buffers()), self._loss, self.inner_optimizer_, shared=True)

    def _meta_params(self) -> dict:
        return dict(self.module_.named_parameters())

    def _current_params(self) -> dict:
        return self._meta_params() if self.adapted_params_ is None else self.adapted_params_

    def _reset_adaptation_state(self):
        self.adapted_params_ = None
        self.inner_state_ = None

    def reset_adaptation(self):
        """Forget every ``partial_adapt`` and return to the meta-learned initialisation.

        Returns
        -------
        self : object
        """
        check_is_fitted(self)
        self._reset_adaptation_state()
        return self

    def partial_adapt(self, X, y):
        """Adapt to one task from a few labelled rows, in place.

        Takes ``adapt_steps`` steps (default ``inner_steps``) of the inner
        optimizer on all of ``X, y``, starting where the last call left off
        (from the meta-learned initialisation on the first call) and keeping
        the inner optimizer's state. The meta-learned parameters never change;
        :meth:`reset_adaptation` undoes every call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Support rows of the new task.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Their targets.

        Returns
        -------
        self : object
            The adapted estimator.
        """
        check_is_fitted(self)
        with _atomic(self):
            X, y_encoded = self._validate_targets(X, y, reset=False)
            device = self._runtime_device()
            x_t = _as_float_tensor(X, device)
            y_t = self._target_tensor(y_encoded, device)
            params = self._current_params()
            learner = self._learner()
            state = self.inner_state_
            if state is None:
                state = learner.optimizer.init(params)
            params, state = adapt_task(learner, params, self.inner_meta_params_, state, x_t, y_t, self._adapt_steps())
            if not torch.isfinite(torch.cat([p.reshape(-1) for p in params.values()])).all():
                raise ValueError(
                    "Adaptation produced non-finite parameters; the model is left as it was. "
                    "Lower inner_lr or adapt_steps, or scale the inputs."
                )
            self.adapted_params_, self.inner_state_ = params, state
        return self

    def _runtime_device(self) -> torch.device:
        return next(self.module_.parameters()).device

    def _forward(self, X) -> torch.Tensor:
        """Outputs of the current (adapted, or meta-learned) network for ``X``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        device = self._runtime_device()
        learner, params = self._learner(), self._current_params()
        outputs = torch.empty((X.shape[0], self.n_outputs_), device=device)
        with torch.inference_mode():
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                chunk = _as_float_tensor(X[start : start + _PREDICT_CHUNK], device)
                # Copy out: a chunk's output can keep a far larger buffer alive.
                outputs[start : start + len(chunk)] = learner.forward(params, chunk)
        return outputs

    def _few_shot_outputs(self, X, y, groups):
        """Adapt to each task of ``groups`` on its first rows; predict the rest.

        Returns the outputs for every row (support rows are zero), a boolean
        mask of the query rows, and each row's task code.
        """
        check_is_fitted(self)
        X, y_encoded = self._validate_targets(X, y, reset=False)
        codes, labels = encode_groups(_validate_groups(groups, X.shape[0]))
        device = self._runtime_device()
        tasks = GroupedRows(codes, device)
        n_support = self.n_support
        if isinstance(n_support, Integral):
            support_sizes = np.full(tasks.n_groups, n_support)
        else:
            support_sizes = np.maximum(1, (n_support * tasks.sizes).astype(int))
        too_small = np.flatnonzero(tasks.sizes < support_sizes + 1)
        if len(too_small):
            raise ValueError(
                f"score() adapts each task on its first n_support rows and scores the rest: "
                f"{len(too_small)} task(s) have too few rows (task ids {_describe(labels[too_small])})."
            )
        X_t = _as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        outputs = torch.zeros((X.shape[0], self.n_outputs_), device=device)
        is_query = torch.zeros(X.shape[0], dtype=torch.bool, device=device)
        for size in np.unique(support_sizes):
            selected = torch.as_tensor(np.flatnonzero(support_sizes == size), device=device)
            rows = tasks.rows[selected]
            valid = tasks.valid[selected]
            support, query, query_valid = rows[:, :size], rows[:, size:], valid[:, size:]
            predicted = self._adapt_and_predict(X_t[support], y_t[support], X_t[query])
            outputs[query[query_valid]] = predicted[query_valid]
            is_query[query[query_valid]] = True
        if not torch.isfinite(outputs).all():
            raise _diverged("the held-out tasks", self._adapt_steps())
        return outputs, is_query, codes, y_encoded

    def _adapt_and_predict(self, x_support, y_support, x_query) -> torch.Tensor:
        """Adapt a copy of the meta-learned model to every task at once and predict its query rows."""
        learner = self._learner()
        adapted = adapt_tasks(
            learner, self._meta_params(), self.inner_meta_params_, x_support, y_support, self._adapt_steps()
        )
        return predict_tasks(learner, adapted, x_query)

    # ------------------------------------------------------------------
    # Persistence: plain numpy state, rebuilt into torch on load

    def __getstate__(self):
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = None
            state["_module_state"] = to_numpy_tree(dict(self.module_.state_dict()))
            state["_saved_with"] = saved_with()
        for key in _TENSOR_ATTRIBUTES:
            if key in state:
                state[key] = to_numpy_tree(state[key])
        if "history_" in state:
            state["history_"] = history_to_state(state["history_"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        module_state = state.pop("_module_state", None)
        record = state.pop("_saved_with", None)
        if module_state is None:
            self.__dict__.update(state)
            return
        check_saved_with(record)
        self.__dict__.update(state)
        self.saved_with_ = record
        device = self._load_device()
        self.module_ = build_network(self._network_spec_, 0, device)
        self.module_.load_state_dict(to_torch_tree(module_state, device))
        self.module_.requires_grad_(False)
        for key in _TENSOR_ATTRIBUTES:
            setattr(self, key, to_torch_tree(getattr(self, key), device))
        self.history_ = history_from_state(self.history_)

    def _load_device(self) -> torch.device:
        device = torch.device(self.device_)
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This model was fitted on {self.device_}, which is not available here; it is loaded on the CPU.",
                UserWarning,
                stacklevel=3,
            )
            return torch.device("cpu")
        return device


def _silent(*args, **kwargs):
    pass


def _diverged(what: str, n_steps: int) -> ValueError:
    return ValueError(
        f"Adapting {what} with adapt_steps={n_steps} produced non-finite predictions: the inner loop "
        "diverges at this step count. Lower adapt_steps or inner_lr (Meta-SGD's learned rates are tuned "
        "for the inner_steps it was trained with)."
    )
