"""What one ``fit`` trains with, built from the estimator's arguments and the data: a frozen plan.

:func:`prepare_training` validates the data, resolves the head, builds the
network, the meta-learned model, the sampler and the skorch training object.
It sets no fitted attribute but the ones scikit-learn's ``validate_data``
sets (``n_features_in_``, ``feature_names_in_``), which ``fit`` restores when
it fails, so a failed preparation leaves a fitted model as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import torch
from skorch.callbacks import EarlyStopping
from skorch.history import History

from ..engine import (
    GroupBatch,
    adapt_tasks,
    batch_size,
    evidence_loss,
    moderates,
    predict_tasks,
    task_weights,
    weighted_mean,
)
from ..heads import FunctionalNetwork, GradientHead, Head, takes_masks
from ..training import MetaModel, MetaNet, cache_key, forward_flops, should_compile
from ._heads import is_deprecated, resolve_head, warn_deprecated
from ._network import build_network, is_legacy_module, warn_legacy_module

__all__ = ["TrainingPlan", "build_model", "compile_key", "network_spec", "prepare_training", "use_compile"]


@dataclass(frozen=True)
class TrainingPlan:
    """Everything one ``fit`` trains with; built before any attribute of the estimator changes.

    Attributes
    ----------
    net : MetaNet
        The skorch training object (what callbacks receive as ``net``).
    network : FunctionalNetwork
        The network as functions of its parameters, for the engine.
    head : Head
        The fitted copy of the head (``head_``).
    model : MetaModel
        What meta-training learns (``module_``).
    sample : callable
        Draws one meta-batch.
    validate : callable or None
        Scores the held-out validation batch (early stopping).
    max_grad_norm : float or None
        The deprecated ``max_grad_norm``, when set.
    target_attributes : dict
        Fitted attributes of the targets (``classes_``, ``_single_output``).
    n_outputs, n_support, n_query, n_tasks : int
        Output width; the most support and query rows of a task; tasks per update.
    ragged : bool
        Whether the tasks have different sizes (padded, masked batches).
    device : torch.device
    spec : dict
        The network's description (``_network_spec_``).
    work : float
        Floating-point operations of one forward pass over an update's rows.
    rows : int
        Rows of one update.
    description : dict
        What every rank of a distributed fit must share.
    """

    net: MetaNet
    network: FunctionalNetwork
    head: Head
    model: MetaModel
    sample: Callable[[], Any]
    validate: Callable[[], tuple[dict, int]] | None
    max_grad_norm: float | None
    target_attributes: dict
    n_outputs: int
    n_support: int
    n_query: int
    n_tasks: int
    ragged: bool
    device: torch.device
    spec: dict
    work: float
    rows: int
    description: dict


def network_spec(estimator, n_features_in: int, n_outputs: int) -> dict:
    """The network's description from the estimator's arguments: plain values, saved with the model."""
    spec: dict = {"n_features_in": int(n_features_in), "n_outputs": int(n_outputs)}
    if estimator.module is None:
        if estimator.module_kwargs:
            raise ValueError(
                f"module_kwargs={estimator.module_kwargs!r} is given but module is None: module_kwargs are the "
                "keyword arguments of module. Set module, or leave module_kwargs=None for the built-in MLP."
            )
        sizes = estimator.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else [int(s) for s in sizes]
        if any(s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {estimator.hidden_layer_sizes!r}.")
        spec.update(hidden_layer_sizes=sizes, activation=estimator.activation)
    else:
        spec.update(module=estimator.module, module_kwargs=dict(estimator.module_kwargs or {}))
        if is_legacy_module(estimator.module):
            warn_legacy_module(estimator.module)
            spec.update(legacy=True)
    return spec


def build_model(spec: dict, head: Head, seed: int, device, y: torch.Tensor | None = None) -> MetaModel:
    """A new model: the network of ``spec`` initialised from ``seed``, and the head's meta-parameters."""
    network = build_network(spec, seed, device, gradient_head=isinstance(head, GradientHead))
    head_meta = head.meta_parameters(dict(network.named_parameters()), y)
    return MetaModel(network, head_meta)


def prepare_training(estimator, X, y, groups, seeds, ranks) -> TrainingPlan:
    """Validate the data and build everything ``train`` needs (``validate_data``'s attributes aside, nothing is set)."""
    warm = estimator.warm_start and hasattr(estimator, "module_")
    X, y_encoded, target_attributes = estimator._validate_targets(X, y, reset=not warm, fit=True)
    head = resolve_head(estimator, estimator._head_shortcuts, estimator._task_type)
    estimator._check_head(head)
    max_grad_norm = getattr(estimator, "max_grad_norm", None)
    if is_deprecated(max_grad_norm):
        max_grad_norm = None
    elif max_grad_norm is not None:
        warn_deprecated(
            ["max_grad_norm"],
            f"Use callbacks=[skorch.callbacks.GradientNormClipping(gradient_clip_value={max_grad_norm!r})].",
        )
    device = estimator._resolve_device(ranks)
    net_seed, sample_seed = seeds
    generator = torch.Generator(device=device)
    generator.manual_seed(sample_seed)

    X_t = torch.from_numpy(np.array(X, dtype=np.float32)).to(device)  # a copy: any strides
    y_t = estimator._target_tensor(y_encoded, device)
    n_outputs = estimator._n_outputs(y_encoded, target_attributes)
    sampling = estimator._sampling(X_t, y_t, y_encoded, groups, generator)
    ragged = bool(getattr(sampling.sampler, "ragged", False))
    if ragged and not takes_masks(head):
        raise ValueError(
            f"The training groups have different numbers of rows, so tasks are padded to one size and the "
            f"head is given masks of their real rows, but {type(head).__name__}'s adapt() and loss() take no "
            "mask argument (see sklearn_meta.heads.Head, 'Tasks of different sizes'). Add mask=None to them, "
            "or give groups of equal sizes."
        )
    # whole groups are drawn without replacement: an update holds at most as many as there are
    n_tasks = sampling.sampler.tasks_per_batch(estimator.meta_batch_size)
    if ranks is not None and n_tasks < ranks.size:  # some rank would hold no task
        if estimator.meta_batch_size < ranks.size:
            raise ValueError(
                f"meta_batch_size={estimator.meta_batch_size} tasks per update cannot be shared by {ranks.size} "
                f"processes: set meta_batch_size to at least {ranks.size}."
            )
        raise ValueError(
            f"Each update holds {n_tasks} whole training group(s), too few to share among {ranks.size} "
            "processes: give more groups, or train on fewer processes."
        )
    spec = network_spec(estimator, X.shape[1], n_outputs)
    if warm:
        model = estimator._warm_model(spec, head, target_attributes, device)
    else:
        model = build_model(spec, head, net_seed, device, y_t)
    network = FunctionalNetwork(model.network, dict(model.network.named_buffers()), estimator._loss)
    model.requires_grad_(True)
    quiet = ranks is not None and not ranks.is_main  # only rank 0 prints
    net = MetaNet(
        model,
        estimator._criterion,
        optimizer=estimator._meta_optimizer_factory(),
        lr=estimator._meta_lr,
        optimizer__param_groups=_meta_param_groups(model, head, estimator._meta_lr),
        max_epochs=estimator.max_iter,
        callbacks=_fit_callbacks(estimator, quiet),
        verbose=0 if quiet else estimator.verbose,
        device=str(device),
        progress_every=max(1, 10 // max(1, estimator.verbose)),
    ).initialize()
    if warm:
        net.history_ = History([dict(row) for row in estimator.history_])
    validate = None
    if sampling.validation_batch is not None:
        validate = _validation_function(estimator, network, head, model, sampling.validation_batch)
    # floating-point work of one forward pass over an update's rows, for n_threads="auto"
    rows = n_tasks * (sampling.n_support + sampling.n_query)
    return TrainingPlan(
        net=net,
        network=network,
        head=head,
        model=model,
        sample=lambda: sampling.sampler.sample(estimator.meta_batch_size, generator),
        validate=validate,
        max_grad_norm=max_grad_norm,
        target_attributes=target_attributes,
        n_outputs=n_outputs,
        n_support=sampling.n_support,
        n_query=sampling.n_query,
        n_tasks=n_tasks,
        ragged=ragged,
        device=device,
        spec=spec,
        work=forward_flops(model.network, X_t, rows),
        rows=rows,
        description={
            **target_attributes,
            "parameters": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
            "head": repr(_training_head(head)),
        },
    )


def _meta_param_groups(model: MetaModel, head: Head, meta_lr: float) -> list:
    """skorch ``param_groups``: the head's meta-parameters learn at ``meta_lr_factor * meta_lr``."""
    factor = float(getattr(head, "meta_lr_factor", 1.0))
    if factor == 1.0:
        return []
    return [(f"meta.{i}", {"lr": meta_lr * factor}) for i in range(len(model.meta))]


def _silent(*args, **kwargs):
    pass


def _fit_callbacks(estimator, quiet: bool = False) -> list:
    """The user's callbacks (skorch style: instances, classes or ``(name, callback)`` pairs)."""
    callbacks = list(estimator.callbacks or [])
    if estimator.early_stopping:
        stopper = EarlyStopping(
            monitor="valid_loss",
            patience=estimator.n_iter_no_change,
            threshold=estimator.tol,
            threshold_mode="abs",
            load_best=True,
            sink=print if estimator.verbose and not quiet else _silent,
        )
        callbacks.append(("early_stopping", stopper))
    # As in skorch, the user's callback objects are the ones called (and initialised in place).
    return callbacks


def _validation_function(estimator, network: FunctionalNetwork, head: Head, model: MetaModel, batch):
    if isinstance(batch, GroupBatch):  # the held-out groups' marginal likelihood, per row

        def validate_evidence():
            with torch.no_grad():
                loss = evidence_loss(network, head, model.init_params(), model.head_meta(), batch).item()
            return {"valid_loss": loss}, batch_size(batch)

        return validate_evidence
    n_tasks, n_query = batch.y_query.shape[:2]
    real = torch.ones(n_tasks, n_query, dtype=torch.bool) if batch.query_mask is None else batch.query_mask.bool()
    real = real.cpu().numpy().reshape(-1)
    codes = np.repeat(np.arange(n_tasks), n_query)[real]
    y_flat = batch.y_query.flatten(0, 1).cpu().numpy()[real]

    def validate():
        init_params, head_meta = model.init_params(), model.head_meta()
        with_state = moderates(head)
        adapted = adapt_tasks(
            network, head, init_params, head_meta, batch.x_support, batch.y_support, with_state, batch.support_mask
        )
        params, state = adapted if with_state else (adapted, None)
        output = predict_tasks(network, params, batch.x_query, head, head_meta, state)
        with torch.no_grad():
            if batch.query_mask is None:
                loss = torch.func.vmap(network.loss)(output, batch.y_query).mean().item()
            else:
                losses = torch.func.vmap(network.loss)(output, batch.y_query, batch.query_mask)
                loss = weighted_mean(losses, task_weights(batch)).item()
        flat = output.reshape(n_tasks * n_query, -1).cpu().numpy()[real]
        score = estimator._score_outputs(flat, y_flat, codes)
        return {"valid_loss": loss, "valid_score": score}, batch_size(batch)

    return validate


def _described(value):
    """A description of an argument without addresses, equal in every process."""
    if isinstance(value, (list, tuple)):
        return [_described(v) for v in value]
    if isinstance(value, dict):
        return sorted((k, _described(v)) for k, v in value.items())
    if hasattr(value, "get_params") and not isinstance(value, type):
        return [type(value).__qualname__, _described(value.get_params(deep=False))]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    # a repr that shows the object's values (a dataclass); the default one shows its address
    return type(value).__qualname__ if type(value).__repr__ is object.__repr__ else repr(value)


def _training_head(head) -> list:
    """What of the head meta-training depends on: its class and arguments, ``adapt_steps`` aside."""
    params = head.get_params(deep=False) if hasattr(head, "get_params") else {}
    params.pop("adapt_steps", None)
    return [type(head).__qualname__, _described(params)]


def compile_key(estimator, plan: TrainingPlan) -> str:
    """What the compiled meta-loss depends on (see ``training._compiling``): architecture, head, shapes."""
    architecture = sorted((key, repr(_described(value))) for key, value in plan.spec.items())
    shapes = (plan.n_tasks, plan.n_support, plan.n_query, plan.ragged, torch.device(plan.device).type)
    return cache_key(type(estimator).__qualname__, architecture, repr(_training_head(plan.head)), shapes)


def use_compile(estimator, head: Head, key: str = "") -> bool:
    """Whether this fit compiles its meta-loss (``compile``; never for a head that recomputes its inner loop)."""
    # Compiling takes about a minute on a 2-core CPU (a few seconds when torch has cached it) and
    # saves a few ms per update: "auto" compiles only fits long enough to pay that back.
    if head.recomputes:
        return False
    return should_compile(estimator.compile, estimator.max_iter, key)
