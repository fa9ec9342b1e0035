"""How the files of this folder were made: run with sklearn-meta 0.2 (commit c91a0b2), not with this version.

``git worktree add /tmp/v0_2 c91a0b2 && cd /tmp/v0_2 && python <this file> <this folder>`` writes a
fitted and adapted model per configuration (joblib) and, in ``expected.npz``, the predictions 0.2 made
with them; ``tests/test_persistence.py`` loads the files with this version and compares.
"""

import sys


def main(folder):
    import warnings

    import joblib
    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    from sklearn_meta import MetaClassifier, MetaRegressor
    from sklearn_meta.datasets import make_classification_tasks, make_sinusoid_tasks
    from sklearn_meta.modules import ConvNet

    torch.set_num_threads(1)
    X, y, g = make_sinusoid_tasks(n_tasks=60, n_samples_per_task=20, random_state=0)
    Xn, yn, _ = make_sinusoid_tasks(n_tasks=1, n_samples_per_task=30, random_state=5)
    out = {}
    models = {
        "regressor_ridge": MetaRegressor(hidden_layer_sizes=(16,), max_iter=10, meta_batch_size=5, random_state=0),
        "regressor_gradient_metasgd_head": MetaRegressor(
            hidden_layer_sizes=(16,),
            head="gradient",
            inner_optimizer="meta-sgd",
            adapt_params="head",
            max_iter=10,
            meta_batch_size=5,
            random_state=0,
        ),
        "regressor_gradient_adam": MetaRegressor(
            hidden_layer_sizes=(16, 8),
            head="gradient",
            inner_optimizer="adam",
            inner_steps=2,
            max_iter=10,
            meta_batch_size=5,
            random_state=0,
        ),
    }
    for name, est in models.items():
        est.fit(X, y, groups=g)
        fresh = est.predict(Xn[10:])
        est.partial_adapt(Xn[:10], yn[:10])
        adapted = est.predict(Xn[10:])
        joblib.dump(est, f"{folder}/{name}.joblib")
        out[name] = {"fresh": fresh, "adapted": adapted}
    Xc, yc, gc = make_classification_tasks(n_tasks=40, n_samples_per_task=30, random_state=0)
    for name, est in {
        "classifier_ridge": MetaClassifier(max_iter=10, meta_batch_size=5, random_state=0),
        "classifier_prototypes": MetaClassifier(
            hidden_layer_sizes=(16,), head="prototypes", max_iter=10, meta_batch_size=5, random_state=0
        ),
    }.items():
        est.fit(Xc, yc, groups=gc)
        est.partial_adapt(Xc[:10], yc[:10])
        joblib.dump(est, f"{folder}/{name}.joblib")
        out[name] = {"adapted": est.predict_proba(Xc[10:30])}
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    est = MetaClassifier(
        n_way=3, k_shot=5, module=ConvNet, module_kwargs={"channels": 4}, max_iter=3, random_state=0
    ).fit(Xd[yd < 7], yd[yd < 7])
    sup = np.concatenate([np.flatnonzero(yd == c)[:5] for c in (7, 8, 9)])
    est.partial_adapt(Xd[sup], yd[sup])
    q = np.concatenate([np.flatnonzero(yd == c)[5:15] for c in (7, 8, 9)])
    joblib.dump(est, f"{folder}/episodic_convnet.joblib")
    out["episodic_convnet"] = {"adapted": est.predict_proba(Xd[q])}
    np.savez(f"{folder}/expected.npz", **{f"{k}__{kk}": v for k, d in out.items() for kk, v in d.items()})
    print("ok", {k: list(d) for k, d in out.items()})


if __name__ == "__main__":
    main(sys.argv[1])
