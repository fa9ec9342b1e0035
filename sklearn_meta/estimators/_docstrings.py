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
    Widths of the hidden layers of the built-in MLP body; ``()`` for none
    (the last layer on the input features). ``MetaRegressor`` defaults to
    ``(40, 40)``, which learns the shape of non-linear group curves;
    ``MetaClassifier`` and ``EpisodicClassifier`` default to ``()``, since
    a dense body meta-trained on a few classes learns features that do not
    carry over to new ones. Both were chosen from the measurements in the
    user guide ("Choosing the defaults"). Not used when ``module`` is
    given.""",
    "activation": """\
activation : {"relu", "tanh", "logistic", "identity"}, default=%
    Activation of the built-in MLP's hidden layers. ``MetaRegressor``
    defaults to ``"tanh"``, whose smooth features overfit few training
    groups far less than ReLU's (see the user guide); the classifiers keep
    ``"relu"`` for the body they have when ``hidden_layer_sizes`` gives
    them one.""",
    "module": """\
module : callable, default=None
    The body, instead of the built-in MLP: a ``torch.nn.Module`` class or
    factory, called with ``module_kwargs`` (and with ``n_features_in``
    when its signature names it) to build a fresh body on every fit. Not
    an instance. The body maps rows of shape ``(n, n_features_in)`` to
    features of shape ``(n, n_features)``, of any width; the head owns the
    last layer, ``torch.nn.Linear(n_features, n_outputs)``, which it
    adapts (see :mod:`sklearn_meta.heads`). Any module works with every
    head. Batch normalisation layers (and any normalisation layer with
    ``track_running_stats=True``) are refused: the network runs
    separately on each task's support rows, its query rows and the rows
    given to ``predict``, where batch statistics would make a row's
    prediction depend on the other rows of the call; use
    :class:`torch.nn.LayerNorm` or :class:`torch.nn.GroupNorm`. For rows
    that are flattened images, :class:`sklearn_meta.modules.ConvNet`. A
    module whose signature names ``n_outputs`` builds the whole network,
    as in 0.2: deprecated, with a ``FutureWarning``; an ``nn.Sequential``
    ending in ``nn.Linear`` gives that layer as the last layer, another
    whole network serves only a gradient head.""",
    "module_kwargs": """\
module_kwargs : dict, default=None
    Keyword arguments for ``module`` (an error without ``module``).""",
    "head": """\
head : str or Head, default=%
    How the network adapts to a task: a head object from
    :mod:`sklearn_meta.heads` (its arguments are this estimator's
    ``head__<argument>`` parameters), your own
    :class:`~sklearn_meta.heads.Head`, or a string for a head with its
    defaults:

    %shortcuts

    The closed-form heads fit the last layer to each task in one solve
    (in float64 for the ridge heads) and meta-learn the body through it;
    each ``partial_adapt`` call adds its rows to the fit (the same as
    adapting on all rows seen since the last reset). ``GradientHead`` takes inner-optimizer steps.""",
    "meta_objective": """\
meta_objective : {"episodes", "marginal_likelihood"}, default="episodes"
    What meta-training maximises.

    - ``"episodes"``: how well each task's query rows are predicted after
      adapting on ``n_support`` of its rows (MAML, R2-D2). Every task of
      two rows or more takes part (a smaller one adapts on all its rows
      but one); the meta-loss is the mean loss per query row.
    - ``"marginal_likelihood"`` (a head with a marginal likelihood:
      :class:`~sklearn_meta.heads.BayesianRidgeHead`,
      :class:`~sklearn_meta.heads.BayesianLogisticHead`): the marginal
      likelihood of all the rows of every training group, the last layer's
      weights (and the regressor's noise variance) integrated out, exactly
      for the ridge head and by a Laplace approximation for the logistic
      one: what a mixed model is fitted by (maximum likelihood), with the
      body's features as the random effects' design. Every group counts, whatever its size, and
      no support/query split is drawn (``n_support`` is not used); each
      update takes ``meta_batch_size`` whole groups, padded to the largest
      (or to ``n_query`` rows, a random subset of a larger group: set it
      when one group is far larger than the rest). It needs several
      groups: one group's likelihood does not identify the prior mean.
      Choose it when many groups are small or of very different sizes, as
      in survey and repeated-measures data; the adapted model, ``predict``
      and ``return_std`` are the same as with ``"episodes"``.""",
    "deprecated": """\
inner_optimizer, inner_lr, inner_steps, adapt_steps, first_order, recompute_inner, adapt_params : deprecated
    .. deprecated:: 0.3
       Arguments of :class:`~sklearn_meta.heads.GradientHead`, which is
       where to set them: ``head=GradientHead(inner_lr=0.1)``, searched as
       ``head__inner_lr``. Set here, they still build that head with a
       ``FutureWarning`` (and are not used, with a warning, by a
       closed-form head). Removed in 0.4.
max_grad_norm : deprecated
    .. deprecated:: 0.3
       Clip the meta-gradient with skorch's callback instead:
       ``callbacks=[GradientNormClipping(gradient_clip_value=1.0)]``.
       Removed in 0.4.""",
    "meta_optimizer": """\
meta_optimizer : {"adam", "adamw", "sgd", "rmsprop"} or class, default="adam"
    Outer optimizer: a name or a ``torch.optim.Optimizer`` class (or any
    callable ``(params, lr=...)`` returning one).""",
    "meta_lr": """\
meta_lr : float, default=%
    Outer learning rate. The grouped classifier's default is higher than
    the others' 1e-3: with its default of no body, the network is the
    last layer alone, whose prior mean must travel several logits (a rare
    outcome's intercept) in 1,000 updates (see the user guide's "Choosing
    the defaults").""",
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
    "compile": """\
compile : bool or "auto", default="auto"
    Compile the meta-loss with :func:`torch.compile`: tens of seconds of
    compilation the first time a shape is compiled, a few once torch has
    cached it, then faster updates (measured in the user guide's speed
    section). ``"auto"`` compiles when ``max_iter >= 10000``, and from
    ``max_iter >= 1000`` when an earlier fit of the same architecture,
    head and shapes was compiled (torch's compile cache then holds it), so
    a repeated fit is faster without asking. Falls back to eager execution
    with a warning if compilation fails. Not used with
    ``GradientHead(recompute_inner=True)``.""",
    "warm_start": """\
warm_start : bool, default=False
    When ``fit`` is called again, continue meta-training the fitted model
    (network, the head's meta-parameters and ``history_``) for ``max_iter``
    more updates instead of starting afresh, as ``MLPRegressor`` does. The
    meta-optimizer starts afresh. The network, head, targets and device
    must be those of the fitted model.""",
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
    ``Checkpoint`` / ``LoadInitState``, ``GradientNormClipping`` (to clip
    the meta-gradient) and ``PrintLog`` work unchanged. One outer update is one epoch with one
    training batch (the meta-batch) and, with early stopping, one
    validation batch (the held-out tasks).""",
}


def fill_parameters(cls):
    """Class decorator: replace ``{name}`` lines of the docstring by ``PARAMETERS[name]``."""
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
    lines = []
    shortcuts = textwrap.dedent(getattr(cls, "_head_shortcuts_doc", "")).strip("\n")
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
            entry = entry.replace("    %shortcuts", textwrap.indent(shortcuts, "    "))
            lines.append(textwrap.indent(entry, indent))
        else:
            lines.append(line)
    cls.__doc__ = "\n".join(lines)
    return cls
