"""The shared scikit-learn front of MetaRegressor and MetaClassifier: arguments and meta-training.

The base class owns the constructor arguments and the meta-training
lifecycle. Subclasses supply the target encoding, the loss, the task
sampler and the one metric used by validation and ``score``. Few-shot
adaptation and prediction live in ``_adaptation``, task arithmetic in
``_splitting``, saving in ``_persistence``, the training loop in
``_training``.
"""

from __future__ import annotations

import copy
import inspect
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, StrOptions
from skorch.callbacks import EarlyStopping
from skorch.history import History

from ._adaptation import AdaptationMixin, as_float_tensor, atomic
from ._compiling import cache_key, mark_warm, should_compile
from ._distributed import Ranks
from ._engine import GroupBatch, Learner, adapt_tasks, batch_size, evidence_loss, predict_tasks
from ._heads import HEADS
from ._network import ACTIVATIONS, build_network, last_layer_names
from ._persistence import PersistenceMixin
from ._threads import choose, forward_flops, intra_op_threads
from ._training import MetaModel, MetaNet, train
from ._warnings import warn
from .optim import adapted_names, masked, resolve_inner_optimizer

META_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def _arguments(local_variables: dict) -> dict:
    """A concrete estimator's constructor arguments, from its ``locals()``."""
    return {k: v for k, v in local_variables.items() if k not in ("self", "__class__")}


def _silent(*args, **kwargs):
    pass


class BaseMetaEstimator(AdaptationMixin, PersistenceMixin, BaseEstimator):
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
        "recompute_inner": ["boolean"],
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
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "callbacks": [list, None],
        "adapt_params": [StrOptions({"all", "head"}), list, tuple],
    }

    def __init__(self, **params):
        # The concrete estimators own the signatures and defaults; arguments are stored untouched.
        for name, value in params.items():
            setattr(self, name, value)

    # What subclasses provide -------------------------------------------------

    _criterion: type[torch.nn.Module]  # the loss as a module, for skorch's criterion_

    @staticmethod
    def _loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _validate_targets(self, X, y, reset: bool):
        """Validate ``X, y``; return ``X``, the encoded targets, and the target attributes to set."""
        raise NotImplementedError

    def _target_tensor(self, y_encoded, device) -> torch.Tensor:
        raise NotImplementedError

    def _n_outputs(self, y_encoded, target_attributes: dict) -> int:
        """Width of the network's output layer."""
        raise NotImplementedError

    def _score_outputs(self, outputs: np.ndarray, y_encoded: np.ndarray, codes: np.ndarray, sample_weight=None):
        """The estimator's few-shot metric over query rows (pooled R², accuracy)."""
        raise NotImplementedError

    def _make_sampler(self, X_t, y_t, y_encoded, groups, generator):
        """Return the training sampler, a fixed validation batch (or ``None``), n_support and n_query."""
        raise NotImplementedError

    # Meta-training -----------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Meta-train on a collection of tasks.

        With ``warm_start=True`` and a fitted estimator, meta-training
        continues from the fitted state for ``max_iter`` more updates.

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
        with atomic(self):
            self._fit(X, y, groups)
        return self

    def _fit(self, X, y, groups):
        self._check_head_arguments()
        ranks = Ranks.current()  # inside an initialised process group of several: distributed meta-training
        rng = check_random_state(self.random_state)
        seeds = tuple(int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2))
        if ranks is not None:  # rank 0's seeds: the same network and meta-batches on every rank
            seeds = ranks.broadcast_object(seeds)
        try:
            # validation and building run on the threads of small work; training on those its work calls for
            with intra_op_threads(choose(self.n_threads, 0.0)):
                prepared = self._prepare_training(X, y, groups, seeds, ranks)
        except Exception as error:
            if ranks is None:
                raise
            ranks.agree(None, error)  # re-raises here; the other ranks raise RankFailedError, not wait
        if ranks is not None:  # every rank learns whether all of them prepared the same model
            ranks.agree(prepared["description"])
        net, learner, model = prepared["net"], prepared["learner"], prepared["model"]
        key = self._compile_key(
            prepared["spec"], prepared["n_support"], prepared["n_query"], prepared["device"], prepared["n_tasks"]
        )
        with intra_op_threads(choose(self.n_threads, prepared["work"])):
            compiled = self._train(net, learner, prepared, ranks, self._use_compile(key))
        if compiled:  # torch has cached this compilation: "auto" compiles shorter fits of these shapes
            mark_warm(key)
        model.requires_grad_(False)

        # Every fitted attribute is set here, and only here.
        for name, value in prepared["target_attributes"].items():
            setattr(self, name, value)
        self.module_ = model
        self.inner_optimizer_ = prepared["inner"]
        self.history_ = net.history
        self.n_iter_ = len(net.history)
        self.loss_curve_ = list(net.history[:, "train_loss"]) if len(net.history) else []
        self.n_outputs_ = prepared["n_outputs"]
        self.n_support_, self.n_query_ = prepared["n_support"], prepared["n_query"]
        self.device_ = str(prepared["device"])
        self._network_spec_ = prepared["spec"]
        self._flops_per_row_ = prepared["work"] / prepared["rows"]  # for n_threads="auto" after fit
        self._reset_adaptation_state()

    def _train(self, net, learner, prepared, ranks, compile: bool) -> bool:
        return train(
            net,
            learner,
            prepared["sample"],
            max_iter=self.max_iter,
            n_steps=self.inner_steps,
            first_order=self.first_order,
            recompute=self.recompute_inner,
            validate=prepared["validate"],
            max_grad_norm=self.max_grad_norm,
            compile=compile,
            ranks=ranks,
        )

    def _prepare_training(self, X, y, groups, seeds, ranks) -> dict:
        """Validate the data and build everything ``train`` needs, changing no attribute."""
        warm = self.warm_start and hasattr(self, "module_")
        X, y_encoded, target_attributes = self._validate_targets(X, y, reset=not warm)
        device = self._resolve_device(ranks)
        net_seed, sample_seed = seeds
        generator = torch.Generator(device=device)
        generator.manual_seed(sample_seed)

        X_t = as_float_tensor(X, device)
        y_t = self._target_tensor(y_encoded, device)
        n_outputs = self._n_outputs(y_encoded, target_attributes)
        sampler, validation_batch, n_support, n_query = self._make_sampler(X_t, y_t, y_encoded, groups, generator)
        # whole groups are drawn without replacement: an update holds at most as many as there are
        n_tasks = sampler.tasks_per_batch(self.meta_batch_size)
        if ranks is not None and n_tasks < ranks.size:  # some rank would hold no task
            if self.meta_batch_size < ranks.size:
                raise ValueError(
                    f"meta_batch_size={self.meta_batch_size} tasks per update cannot be shared by {ranks.size} "
                    f"processes: set meta_batch_size to at least {ranks.size}."
                )
            raise ValueError(
                f"Each update holds {n_tasks} whole training group(s), too few to share among {ranks.size} "
                "processes: give more groups, or train on fewer processes."
            )
        spec = self._network_spec(X.shape[1], n_outputs)
        network = self.module_.network if warm else build_network(spec, net_seed, device)
        head = HEADS[spec["head"]]
        if not warm and hasattr(head, "init_from_targets"):
            head.init_from_targets(network, y_t)
        inner = self._resolve_inner_optimizer(network)
        if warm:
            model = self._warm_model(spec, inner, target_attributes, device)
        else:
            model = self._new_model(network, inner)
        learner = Learner(model.network, dict(model.network.named_buffers()), self._loss, inner, head=head)
        model.requires_grad_(True)
        quiet = ranks is not None and not ranks.is_main  # only rank 0 prints
        net = MetaNet(
            model,
            self._criterion,
            optimizer=self._meta_optimizer_factory(),
            lr=self.meta_lr,
            optimizer__param_groups=self._meta_param_groups(model),
            max_epochs=self.max_iter,
            callbacks=self._fit_callbacks(quiet),
            verbose=0 if quiet else self.verbose,
            device=str(device),
            progress_every=max(1, 10 // max(1, self.verbose)),
        ).initialize()
        if warm:
            net.history_ = History([dict(row) for row in self.history_])
        validate = None
        if validation_batch is not None:
            validate = self._validation_function(learner, model, validation_batch)
        # floating-point work of one forward pass over an update's rows, for n_threads="auto"
        rows = n_tasks * (n_support + n_query)
        work = forward_flops(model.network, X_t, rows)
        return {
            "work": work,
            "rows": rows,
            "net": net,
            "learner": learner,
            "model": model,
            "inner": inner,
            "sample": lambda: sampler.sample(self.meta_batch_size, generator),
            "validate": validate,
            "target_attributes": target_attributes,
            "n_outputs": n_outputs,
            "n_support": n_support,
            "n_query": n_query,
            "n_tasks": n_tasks,
            "device": device,
            "spec": spec,
            # what every rank of a distributed fit must share
            "description": {
                **{name: value for name, value in target_attributes.items()},
                "parameters": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
            },
        }

    #: Arguments of the inner gradient steps: a closed-form head does not use them.
    _GRADIENT_ARGUMENTS = (
        "adapt_params",
        "inner_optimizer",
        "inner_lr",
        "inner_steps",
        "adapt_steps",
        "first_order",
        "recompute_inner",
    )

    def _head_key(self) -> str:
        """The key of ``_heads.HEADS`` that the ``head`` argument selects (an estimator may refine it)."""
        return self.head

    def _check_head_arguments(self) -> None:
        """Warn when arguments that only the gradient head uses are set with a closed-form head."""
        if HEADS[self._head_key()] is None:
            return
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        unused = [
            name
            for name in self._GRADIENT_ARGUMENTS
            if not (getattr(self, name) is defaults[name] or _plain_equal(getattr(self, name), defaults[name]))
        ]
        if unused:
            warn(
                f"head={self.head!r} fits the last layer in closed form, so {', '.join(unused)} "
                f"{'is' if len(unused) == 1 else 'are'} not used. Set head='gradient' to adapt with "
                "inner-optimizer steps.",
                UserWarning,
            )

    def _meta_param_groups(self, model) -> list:
        """skorch ``param_groups``: a closed-form head's meta-parameters learn at ``meta_lr_factor * meta_lr``.

        They are scales (log noise scale, prior scale) that must move by
        orders of magnitude from their initial values: at ``meta_lr`` alone
        a few hundred Adam updates move a log-scale by less than one.
        """
        head = HEADS[self._head_key()]
        if head is None:
            return []
        # HeadedNetwork holds them as its own parameters; body and head are its submodules
        names = [f"network.{name}" for name, _ in model.network.named_parameters(recurse=False)]
        return [(name, {"lr": self.meta_lr * head.meta_lr_factor}) for name in names]

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
        spec.update(head=self._head_key())
        return spec

    def _resolve_inner_optimizer(self, network):
        """The inner optimizer, masked to the parameters ``adapt_params`` selects."""
        inner = resolve_inner_optimizer(self.inner_optimizer, self.inner_lr)
        if isinstance(self.adapt_params, str) and self.adapt_params == "all":
            return inner
        patterns = last_layer_names(network) if self.adapt_params == "head" else list(self.adapt_params)
        return masked(inner, patterns)

    @staticmethod
    def _new_model(network, inner) -> MetaModel:
        names = adapted_names(inner, (name for name, _ in network.named_parameters()))
        params = dict(network.named_parameters())
        return MetaModel(network, inner.meta_parameters({name: params[name] for name in names}))

    def _build_model(self, device) -> MetaModel:
        """An untrained model of the fitted architecture, to load a saved state into."""
        return self._new_model(build_network(self._network_spec_, 0, device), self.inner_optimizer_)

    def _warm_model(self, spec, inner, target_attributes, device) -> MetaModel:
        changed = [name for name, old, new in [("network", self._network_spec_, spec), ("inner optimizer",
                   self.inner_optimizer_, inner)] if old != new]  # fmt: skip
        changed += [name for name, value in target_attributes.items() if not np.array_equal(getattr(self, name), value)]
        if changed or str(device) != self.device_:
            what = ", ".join(changed) or "device"
            raise ValueError(
                f"warm_start=True continues meta-training the fitted model, but the {what} changed since "
                "it was fitted. Set warm_start=False to fit from scratch."
            )
        return copy.deepcopy(self.module_)  # a failed or interrupted fit must not touch the fitted model

    def _use_compile(self, key: str | None = None) -> bool:
        # Compiling takes about a minute on a 2-core CPU (a few seconds when torch has cached it) and
        # saves a few ms per update: "auto" compiles only fits long enough to pay that back.
        if self.recompute_inner and HEADS[self._head_key()] is None:
            return False  # the recomputing backward pass runs eagerly
        return should_compile(self.compile, self.max_iter, key or "")

    def _compile_key(self, spec: dict, n_support: int, n_query: int, device, n_tasks: int | None = None) -> str:
        """What the compiled meta-loss depends on (see ``_compiling``): architecture, inner loop, shapes.

        ``n_tasks``: the tasks in an update, when fewer than ``meta_batch_size`` (few whole groups).
        """

        def name(value):  # a description without addresses, equal in every process
            if isinstance(value, (list, tuple)):
                return [name(v) for v in value]
            if isinstance(value, dict):
                return sorted((k, name(v)) for k, v in value.items())
            if callable(value) and hasattr(value, "__qualname__"):
                return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
            return value if isinstance(value, (str, int, float, bool, type(None))) else type(value).__qualname__

        architecture = sorted((key, repr(name(value))) for key, value in spec.items())
        inner = [repr(name(getattr(self, key))) for key in self._GRADIENT_ARGUMENTS if key != "adapt_steps"]
        shapes = (self.meta_batch_size if n_tasks is None else n_tasks, n_support, n_query, torch.device(device).type)
        return cache_key(type(self).__qualname__, architecture, inner, self.inner_lr, shapes)

    def _resolve_device(self, ranks=None) -> torch.device:
        if str(self.device) == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            try:
                device = torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"device={self.device!r} is not a torch device; use 'cpu', 'cuda' or 'auto'.") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but no CUDA GPU is available; use 'cpu' or 'auto'.")
        if ranks is not None and device.type == "cuda" and device.index is None:
            # one GPU per rank: torchrun's LOCAL_RANK, else the one torch.cuda.set_device chose
            local = os.environ.get("LOCAL_RANK")
            device = torch.device("cuda", int(local) if local is not None else torch.cuda.current_device())
        return device

    def _meta_optimizer_factory(self):
        factory = self.meta_optimizer
        return META_OPTIMIZERS[factory] if isinstance(factory, str) else factory

    def _fit_callbacks(self, quiet: bool = False) -> list:
        """The user's callbacks (skorch style: instances, classes or ``(name, callback)`` pairs)."""
        callbacks = list(self.callbacks or [])
        if self.early_stopping:
            stopper = EarlyStopping(
                monitor="valid_loss",
                patience=self.n_iter_no_change,
                threshold=self.tol,
                threshold_mode="abs",
                load_best=True,
                sink=print if self.verbose and not quiet else _silent,
            )
            callbacks.append(("early_stopping", stopper))
        # As in skorch, the user's callback objects are the ones called (and initialised in place).
        return callbacks

    def _validation_function(self, learner, model, batch):
        if isinstance(batch, GroupBatch):  # the held-out groups' marginal likelihood, per row

            def validate_evidence():
                with torch.no_grad():
                    loss = evidence_loss(learner, model.meta_params(), batch).item()
                return {"valid_loss": loss}, batch_size(batch)

            return validate_evidence
        n_steps = self._adapt_steps()
        n_tasks, n_query = batch.y_query.shape[:2]
        codes = np.repeat(np.arange(n_tasks), n_query)
        y_flat = batch.y_query.flatten(0, 1).cpu().numpy()

        def validate():
            adapted = adapt_tasks(
                learner, model.meta_params(), model.inner_meta(), batch.x_support, batch.y_support, n_steps
            )
            output = predict_tasks(learner, adapted, batch.x_query)
            with torch.no_grad():
                loss = torch.func.vmap(learner.loss)(output, batch.y_query).mean().item()
            score = self._score_outputs(output.reshape(n_tasks * n_query, -1).cpu().numpy(), y_flat, codes)
            return {"valid_loss": loss, "valid_score": score}, n_tasks

        return validate


def _plain_equal(value, default) -> bool:
    plain = (str, bool, int, float, type(None))
    return isinstance(value, plain) and isinstance(default, plain) and type(value) is type(default) and value == default
