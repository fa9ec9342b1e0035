"""
Few-shot classification of novel digits (N-way K-shot episodes)
===============================================================

The standard few-shot protocol on scikit-learn's 8x8 digits. A
:class:`~sklearn_meta.MetaClassifier` in episodic mode (``n_way=3``,
``k_shot=5``) is meta-trained on episodes drawn from the digits 0-6 only:
each episode picks 3 of those classes, 5 labelled images of each, and labels
them 0, 1, 2 in a random order, so the model cannot memorise "which output
is which digit"; it learns an initialisation from which a few gradient steps
separate *any* three digits.

It then meets the digits 7, 8 and 9, never seen in meta-training, with 5
labelled images of each. The script compares its accuracy on the other
images of those classes with the same model adapted from a random
initialisation, and with two classical models fitted on the same 15 images,
all on the same episodes. Finally it walks through ``partial_adapt``,
``predict`` and ``predict_proba`` on one episode.

The model is a linear softmax layer (``hidden_layer_sizes=()``). Seven
training classes are far too few for a hidden layer to learn features that
carry over to new digits: a ``(128,)`` layer meta-overfits (about 0.99
few-shot accuracy on the digits 0-6, but below its own random
initialisation on 7-9). Deeper networks pay off with hundreds of training
classes, as in Omniglot or miniImageNet. Expect the linear model to beat its
random initialisation clearly and to be on a par with logistic regression
and 1-nearest neighbour fitted on the same 15 images.

Set ``SKLEARN_META_EXAMPLE_FAST=1`` for a seconds-long smoke run. With
matplotlib installed, a figure of the episode is saved to
``$SKLEARN_META_EXAMPLES_OUT`` or to ``examples/_output/``.
"""

import os
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from sklearn_meta import MetaClassifier

FAST = os.environ.get("SKLEARN_META_EXAMPLE_FAST") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # sphinx-gallery sets no __file__
OUT = Path(os.environ.get("SKLEARN_META_EXAMPLES_OUT") or HERE / "_output")

N_WAY, K_SHOT, N_QUERY = 3, 5, 15
N_EPISODES = 10 if FAST else 100

X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixel intensities 0..16 -> 0..1
base = y <= 6  # meta-training classes
X_novel, y_novel = X[~base], y[~base]  # 7, 8, 9: never seen in meta-training

# %%
# Meta-training on episodes of the digits 0-6
# -------------------------------------------
# Five inner steps with a large step size, during meta-training and, since
# ``adapt_steps`` is left at ``None``, in ``partial_adapt`` and ``score``.
clf = MetaClassifier(
    hidden_layer_sizes=(),
    n_way=N_WAY,
    k_shot=K_SHOT,
    n_query=N_QUERY,
    inner_optimizer="sgd",
    inner_lr=0.5,
    inner_steps=5,
    meta_batch_size=25,
    max_iter=5 if FAST else 500,
    random_state=0,
)
untrained = clone(clf).set_params(max_iter=0)  # the same model, not meta-trained

print(f"Meta-training a {N_WAY}-way {K_SHOT}-shot MetaClassifier on digits 0-6 ...")
start = time.perf_counter()
clf.fit(X[base], y[base])
untrained.fit(X[base], y[base])
print(f"done: {clf.n_iter_} outer updates in {time.perf_counter() - start:.1f} s")

# %%
# Built-in few-shot score
# -----------------------
# In episodic mode ``score`` draws ``n_score_episodes`` seeded episodes
# from the classes present in ``X`` and returns the query accuracy.
print(f"\nMetaClassifier.score on the novel digits 7, 8, 9 ({clf.n_score_episodes} episodes)")
print(f"  {'before meta-training (max_iter=0)':<36}{untrained.score(X_novel, y_novel):>8.3f}")
print(f"  {'after meta-training':<36}{clf.score(X_novel, y_novel):>8.3f}")

# %%
# The same episodes for every method
# ----------------------------------
rng = np.random.RandomState(0)


def draw_episode():
    """K_SHOT support and N_QUERY query rows of each novel class."""
    support, query = [], []
    for digit in (7, 8, 9):
        rows = rng.permutation(np.flatnonzero(y_novel == digit))
        support.extend(rows[:K_SHOT])
        query.extend(rows[K_SHOT : K_SHOT + N_QUERY])
    return np.array(support), np.array(query)


def adapted(model):
    # A new episode is a new task: forget the previous adaptation first.
    return lambda X_s, y_s: model.reset_adaptation().partial_adapt(X_s, y_s)


methods = {
    "MetaClassifier, meta-trained on 0-6": adapted(clf),
    "same model, random init (max_iter=0)": adapted(untrained),
    "LogisticRegression on the support rows": lambda X_s, y_s: LogisticRegression().fit(X_s, y_s),
    "1-nearest neighbour on the support rows": lambda X_s, y_s: KNeighborsClassifier(1).fit(X_s, y_s),
}
accuracy = {name: [] for name in methods}
for _ in range(N_EPISODES):
    support, query = draw_episode()
    for name, fit in methods.items():
        model = fit(X_novel[support], y_novel[support])
        accuracy[name].append(np.mean(model.predict(X_novel[query]) == y_novel[query]))

print(f"\n{N_WAY}-way {K_SHOT}-shot accuracy on the novel digits, {N_EPISODES} episodes of {N_WAY * N_QUERY} queries")
print(f"  {'method':<42}{'accuracy':>9}{'± 2 s.e.':>10}")
for name, values in accuracy.items():
    print(f"  {name:<42}{np.mean(values):>9.3f}{2 * np.std(values) / np.sqrt(len(values)):>10.3f}")

# %%
# One episode, step by step
# -------------------------
# The first ``partial_adapt`` after ``fit`` or ``reset_adaptation`` sets
# ``classes_`` from its labels; ``predict`` returns those labels and the
# columns of ``predict_proba`` follow ``classes_``.
support, query = draw_episode()
clf.reset_adaptation()
clf.partial_adapt(X_novel[support], y_novel[support])
print(f"\nOne episode: partial_adapt on {len(support)} labelled images, classes_ = {clf.classes_.tolist()}")
predicted = clf.predict(X_novel[query])
proba = clf.predict_proba(X_novel[query])
print(f"  query accuracy: {np.mean(predicted == y_novel[query]):.3f}")
print(f"  {'true':>6}{'predicted':>11}   predict_proba (columns {clf.classes_.tolist()})")
for i in range(0, len(query), N_QUERY // 3):  # a few queries of each class
    print(f"  {y_novel[query[i]]:>6}{predicted[i]:>11}   {np.array2string(proba[i], precision=3, floatmode='fixed')}")

try:
    clf.partial_adapt(X[y == 0][:5], y[y == 0][:5])
except ValueError as error:
    print(f"\nAdapting to another digit without reset_adaptation() first:\n  ValueError: {error}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\nmatplotlib is not installed: no figure.")
else:
    shown = np.arange(0, len(query), 3)[:15]  # positions in the query set, 5 of each class
    fig, axes = plt.subplots(2, 15, figsize=(12, 2.4))
    for ax, row in zip(axes[0], support):
        ax.imshow(X_novel[row].reshape(8, 8), cmap="gray_r")
        ax.set_title(str(y_novel[row]), fontsize=9)
    for ax, j in zip(axes[1], shown):
        ax.imshow(X_novel[query[j]].reshape(8, 8), cmap="gray_r")
        color = "green" if predicted[j] == y_novel[query[j]] else "red"
        ax.set_title(f"{predicted[j]} ({proba[j].max():.2f})", fontsize=8, color=color)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("support", fontsize=9)
    axes[1, 0].set_ylabel("query", fontsize=9)
    fig.suptitle("A 3-way 5-shot episode of novel digits: support (top), predictions (bottom)", fontsize=10)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "few_shot_digits.png"
    fig.savefig(path, dpi=120)
    print(f"\nFigure saved to {path}")
