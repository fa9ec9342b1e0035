"""Constructor arguments documented once, for both estimators' docstrings.

An estimator's docstring names the shared arguments as ``{name}``
placeholders; :func:`fill_parameters` replaces them with the entries below.
An entry whose first line ends in ``default=%`` takes its default from the
estimator's signature: the defaults are chosen per estimator.
"""

from __future__ import annotations

import inspect
import textwrap

__all__ = ["PARAMETERS", "fill_parameters"]

PARAMETERS = {
    "hidden_layer_sizes": """\
hidden_layer_sizes : array-like of int, default=%
    Widths of the hidden layers of the built-in MLP; ``()`` for none (the
    head alone, on the input features). ``MetaRegressor`` defaults to
    ``(40, 40)``: on the multilevel data of ``benchmarks/real_data.py`` its
    body learns the shape of the group curves (Milk, gapminder: 0.76x and
    0.61x a mixed model's query MSE at K = 5). ``MetaClassifier`` defaults
    to ``()``: on novel-class digits (``benchmarks/digits_episodes.py``,
    3-way 5-shot) a dense body meta-trained on seven classes learns
    features that do not carry over to new classes (0.77 accuracy with
    ``(40, 40)``, 0.87 with ``(200,)``), while the head on the pixels
    reaches 0.91, on a par with logistic regression. Give a body
    (or a convolutional ``module``) when the training tasks have many
    classes or the classes are shared between tasks and not linearly
    separable.""",
    "activation": """\
activation : {"relu", "tanh", "logistic", "identity"}, default=%
    Activation of the hidden layers. ``MetaRegressor`` defaults to
    ``"tanh"``: on the multilevel data of ``benchmarks/real_data.py`` its
    smooth features overfit few training groups far less than ReLU's
    (sleepstudy, 13 groups: query MSE 1.10x a mixed model's against 1.72x)
    and do as well or better elsewhere. ``MetaClassifier`` keeps ``"relu"``
    for the body it has when ``hidden_layer_sizes`` is given one.""",
    "module": """\
module : callable, default=None
    A ``torch.nn.Module`` class or factory to use instead of the MLP, called
    with ``module_kwargs`` (and with ``n_features_in`` and ``n_outputs``
    when its signature names them) to build a fresh network on every fit.
    Not an instance. Batch normalisation layers (and any normalisation
    layer with ``track_running_stats=True``) are refused: the network runs
    separately on each task's support rows, its query rows and the rows
    given to ``predict``, where batch statistics would make a row's
    prediction depend on the other rows of the call; use
    :class:`torch.nn.LayerNorm` or :class:`torch.nn.GroupNorm`. For rows
    that are flattened images, :class:`sklearn_meta.modules.ConvNet`.""",
    "module_kwargs": """\
module_kwargs : dict, default=None
    Keyword arguments for ``module``.""",
    "head": """\
head : str, default=%
    How the network's last layer (the head) adapts to a task:

    - ``"gradient"``: ``inner_steps`` steps of ``inner_optimizer`` on the
      parameters ``adapt_params`` selects (MAML, Meta-SGD, ANIL).
    - ``"ridge"`` (``MetaRegressor``): in closed form, as Bayesian linear
      regression on the features of the rest of the network (R2-D2,
      Bertinetto et al. 2019) with a normal-inverse-gamma prior: the prior
      mean (the meta-learned last layer), a full prior covariance (which
      directions of the feature space vary between tasks, like a mixed
      model's random-effects covariance) and the prior of each task's noise
      variance are meta-learned with the network through the negative
      log-likelihood of the query rows (so ``loss_curve_`` holds that
      likelihood). Each task's noise variance is estimated from its own
      rows; ``predict(X, return_std=True)`` gives the standard deviation of
      the Student-t predictive distribution.
    - ``"prototypes"`` (``MetaClassifier``): each class's mean support
      feature (prototypical networks, Snell et al. 2017), scored by negative
      squared distance with a meta-learned scale; a class without support
      rows keeps the meta-learned last layer.

    - ``"ridge"`` (``MetaClassifier``): ridge regression of the one-hot
      labels on the features, times a logit scale (R2-D2); the penalty and
      the scale are meta-learned. With grouped tasks it shrinks towards the
      meta-learned last layer; in episodes (``n_way``), whose labels are
      task-local, towards zero. Unlike prototypes it needs no scaling of
      the inputs.

    The defaults (``"ridge"`` for both estimators) were chosen from the
    measurements in ``benchmarks/``: on the multilevel data sets and the
    sinusoids they reach lower few-shot errors than gradient steps at a
    fraction of the meta-training cost, and the closed forms have no inner
    learning rate to tune.

    The closed forms adapt only the last layer (the rest of the network is
    meta-learned, not adapted) in one solve (in float64), so ``inner_optimizer``,
    ``inner_lr``, ``inner_steps``, ``adapt_steps``, ``first_order``,
    ``recompute_inner`` and ``adapt_params`` are not used (setting them
    warns); each ``partial_adapt`` call adds its rows to the fit (the same
    as adapting on all rows seen since the last reset).
    They need a network ending in a linear layer: the built-in MLP, or a
    ``module`` building a ``torch.nn.Sequential`` whose last layer is
    ``torch.nn.Linear``.""",
    "adapt_params": """\
adapt_params : "all", "head" or list of str, default="all"
    Which parameters the inner optimizer adapts (``head="gradient"``):
    all of them (MAML), only the last layer (``"head"``: ANIL, Raghu et
    al. 2020, much cheaper per update), or the parameters whose names
    (``module_.network.named_parameters()``) match the given shell-style
    patterns, e.g. ``["encoder.2.*", "out.*"]``. The others are
    meta-learned but keep their meta-learned values in every task. Built
    with :func:`sklearn_meta.optim.masked`.""",
    "inner_optimizer": """\
inner_optimizer : {"sgd", "adam", "meta-sgd"} or object, default="sgd"
    The inner-loop optimizer: a name (built with ``inner_lr``), or a
    gradient transformation from :mod:`sklearn_meta.optim` (a chain of
    transforms, a ``masked`` one that adapts only some parameters, or your
    own object following :class:`sklearn_meta.optim.InnerOptimizer`; then
    ``inner_lr`` is not used).""",
    "inner_lr": """\
inner_lr : float, default=0.01
    Inner learning rate (Meta-SGD: the initial value of the learned rates).""",
    "inner_steps": """\
inner_steps : int, default=1
    Inner steps per task during meta-training.""",
    "adapt_steps": """\
adapt_steps : int, default=None
    Inner steps taken by :meth:`partial_adapt` and :meth:`score`; ``None``
    means ``inner_steps``.""",
    "first_order": """\
first_order : bool, default=False
    Drop the second-order terms of the meta-gradient (first-order MAML).""",
    "recompute_inner": """\
recompute_inner : bool, default=False
    Keep no graph through the inner steps during meta-training: the
    backward pass recomputes each task's inner trajectory step by step from
    a few stored parameter-sized checkpoints (about ``log2(inner_steps) +
    2`` of them), so the memory of a second-order update stays nearly flat
    in ``inner_steps`` instead of growing with it, for more time per update
    (measured: 22 MiB instead of 46 at 20 steps, 21 instead of 77 at 40,
    for 1.2-1.9x the time at 5-40 steps; ``benchmarks/results/memory.md``).
    The meta-gradient is the same, first or second order, for every
    gradient-transformation inner optimizer. Meta-training then runs
    eagerly: ``compile`` is not used.""",
    "meta_optimizer": """\
meta_optimizer : {"adam", "adamw", "sgd", "rmsprop"} or class, default="adam"
    Outer optimizer: a name or a ``torch.optim.Optimizer`` class (or any
    callable ``(params, lr=...)`` returning one).""",
    "meta_lr": """\
meta_lr : float, default=1e-3
    Outer learning rate.""",
    "meta_batch_size": """\
meta_batch_size : int, default=25
    Tasks per outer update.""",
    "max_iter": """\
max_iter : int, default=1000
    Number of outer updates (with ``warm_start``, more updates).""",
    "early_stopping": """\
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the tasks (episodic classifier: of
    the classes) and stop when their few-shot loss has not improved by
    ``tol`` for ``n_iter_no_change`` updates, keeping the best
    meta-parameters. The held-out tasks' loss and score are recorded in
    ``history_`` as ``valid_loss`` and ``valid_score``.""",
    "validation_fraction": """\
validation_fraction : float, default=0.1
    Fraction of tasks (or classes) held out for early stopping.""",
    "n_iter_no_change": """\
n_iter_no_change : int, default=10
    Patience of early stopping, in outer updates.""",
    "tol": """\
tol : float, default=1e-4
    Smallest improvement of the validation loss that counts.""",
    "max_grad_norm": """\
max_grad_norm : float, default=None
    Clip the meta-gradient to this norm.""",
    "compile": """\
compile : bool or "auto", default="auto"
    Compile the meta-loss with :func:`torch.compile`: 20-45 s of
    compilation on a 2-core CPU the first time a shape is compiled, 2-5 s
    once torch has cached it, then 1.8-3.2x faster updates. ``"auto"``
    compiles when ``max_iter >= 10000``, and from ``max_iter >= 1000`` when
    an earlier fit of the same architecture, inner loop and shapes was
    compiled (torch's compile cache then holds it), so a repeated fit is
    faster without asking. Falls back to eager execution with a warning if
    compilation fails. Not used with ``recompute_inner=True``.""",
    "warm_start": """\
warm_start : bool, default=False
    When ``fit`` is called again, continue meta-training the fitted model
    (network, inner meta-parameters and ``history_``) for ``max_iter`` more
    updates instead of starting afresh, as ``MLPRegressor`` does. The
    meta-optimizer starts afresh. The network, inner optimizer, targets
    and device must be those of the fitted model.""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds the network initialisation, task sampling and (episodic
    classifier) the scoring episodes.""",
    "device": """\
device : str, default="cpu"
    ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"``.""",
    "n_threads": """\
n_threads : "auto", int or None, default="auto"
    torch intra-op threads while ``fit``, ``partial_adapt``, ``predict``
    (and ``predict_proba``) and ``score`` run; the caller's setting is
    restored after each call. ``"auto"`` uses one thread for
    networks too small to gain from more (the default MLP and most
    tabular bodies: extra threads barely help them and slow them down
    several times when another process competes for the cores) and the
    caller's threads (``torch.get_num_threads()``) for work large enough
    to gain from them, decided from the floating-point work of one forward
    pass over an update's rows. An int: at most that many. ``None``: leave
    torch's setting as it is. Several estimators fitted at once in threads
    of one process take one thread each.""",
    "verbose": """\
verbose : int, default=0
    0 is silent; 1 draws a progress bar (tqdm) with the latest meta-loss
    and validation results; 2 or more prints skorch's training table for
    the first update and every ``10 // verbose``-th one (every update from
    10 on).""",
    "callbacks": """\
callbacks : list of skorch callbacks, default=None
    Called at each outer update as skorch calls them at each epoch: each
    entry a callback, a callback class, or a ``(name, callback)`` pair.
    They receive the training net (a :class:`skorch.NeuralNet` whose
    ``module_`` holds the meta-parameters and ``optimizer_`` is the
    meta-optimizer), so ``EarlyStopping``, ``LRScheduler``,
    ``Checkpoint`` / ``LoadInitState``, ``GradientNormClipping`` and
    ``PrintLog`` work unchanged. One outer update is one epoch with one
    training batch (the meta-batch) and, with early stopping, one
    validation batch (the held-out tasks).""",
}


def fill_parameters(cls):
    """Class decorator: replace ``{name}`` lines of the docstring by ``PARAMETERS[name]``."""
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
    lines = []
    for line in cls.__doc__.splitlines():
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}") and stripped[1:-1] in PARAMETERS:
            name = stripped[1:-1]
            indent = line[: len(line) - len(line.lstrip())]
            entry = PARAMETERS[name]
            first, rest = entry.split("\n", 1)
            if first.endswith("default=%"):
                value = defaults[name]
                entry = first[:-1] + (f'"{value}"' if isinstance(value, str) else repr(value)) + "\n" + rest
            lines.append(textwrap.indent(entry, indent))
        else:
            lines.append(line)
    cls.__doc__ = "\n".join(lines)
    return cls
