"""Network bodies to pass as ``module=``, for data whose rows have a structure the MLP ignores.

The built-in MLP (``hidden_layer_sizes``) treats the features as an
unordered set, which is right for tabular data. When each row is a flattened
image, a convolutional body carries over to classes never seen in
meta-training far better: strokes shifted by a pixel look alike to it.
"""

from __future__ import annotations

from numbers import Integral

from torch import nn

__all__ = ["ConvNet"]


class ConvNet(nn.Sequential):
    """A body of two 3x3 convolutions and a 2x2 max-pool, for rows that are flattened images.

    Pass the class itself as ``module=ConvNet`` (and any argument below
    except the first in ``module_kwargs``): the estimator builds a fresh
    body for each fit, giving it ``n_features_in``. Like every module, it is
    the body: it maps each row to features, and the head adds and adapts
    the last layer on them (the closed-form heads fit it to each task,
    ``GradientHead`` adapts what its ``adapt_params`` selects).

    Layers: ``Unflatten`` to ``image_shape``, ``Conv2d(3x3, padding 1)``,
    ReLU, ``Conv2d(3x3, padding 1)``, ReLU, ``MaxPool2d(2)``, ``Flatten``:
    ``channels * (height // 2) * (width // 2)`` features. No normalisation
    layer (batch normalisation does not fit per-task adaptation; see the
    user guide).

    Parameters
    ----------
    n_features_in : int
        Features per row: the pixels of one image (channels x height x
        width, in that order, as ``numpy.reshape`` flattens them). Given by
        the estimator.
    image_shape : tuple of int, default=None
        ``(height, width)`` or ``(channels, height, width)`` of one image.
        ``None``: one channel and a square image, ``side = sqrt(n_features_in)``
        (an 8x8 image from :func:`sklearn.datasets.load_digits` has 64).
    channels : int, default=32
        Channels of both convolutions. Cost per update grows about as its
        square.

    Raises
    ------
    ValueError
        If ``image_shape`` does not hold ``n_features_in`` pixels, if it is
        ``None`` and ``n_features_in`` is not a perfect square, or if the
        image is smaller than 2x2 (the max-pool halves each side). The
        estimator's ``fit`` raises it before training, and a fitted model is
        kept.

    See Also
    --------
    sklearn_meta.EpisodicClassifier : ``module=ConvNet`` for few-shot image classification.

    Notes
    -----
    On novel-class digits it carries over to new classes far better than a
    dense body or the raw pixels, and meta-training on few classes for long
    lowers that again: the user guide gives the measurements, and why
    ``max_iter`` should stay small there.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_meta import EpisodicClassifier
    >>> from sklearn_meta.modules import ConvNet
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = EpisodicClassifier(n_way=3, k_shot=5, module=ConvNet, module_kwargs={"channels": 8},
    ...                          max_iter=5, random_state=0).fit(X[y <= 6], y[y <= 6])
    >>> support = np.concatenate([np.flatnonzero(y == d)[:5] for d in (7, 8, 9)])
    >>> clf.partial_adapt(X[support], y[support]).classes_
    array([7, 8, 9])
    >>> ConvNet(64)  # the body the estimator builds for 8x8 images: 512 features
    ConvNet(
      (0): Unflatten(dim=-1, unflattened_size=(1, 8, 8))
      (1): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
      (2): ReLU()
      (3): Conv2d(32, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
      (4): ReLU()
      (5): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
      (6): Flatten(start_dim=-3, end_dim=-1)
    )
    """

    def __init__(self, n_features_in: int, image_shape=None, channels: int = 32):
        depth, height, width = _image_shape(n_features_in, image_shape)
        if not isinstance(channels, Integral) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}.")
        super().__init__(
            nn.Unflatten(-1, (depth, height, width)),
            nn.Conv2d(depth, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(-3),
        )


def _image_shape(n_features_in: int, image_shape) -> tuple[int, int, int]:
    """``(channels, height, width)`` from ``image_shape``, checked against ``n_features_in``."""
    if image_shape is None:
        side = round(n_features_in**0.5)
        if side * side != n_features_in:
            raise ValueError(
                f"ConvNet with image_shape=None needs square one-channel images, but the rows have "
                f"{n_features_in} features, not a square number. Pass module_kwargs={{'image_shape': "
                "(height, width)} or (channels, height, width)."
            )
        shape = (1, side, side)
    else:
        iterable = hasattr(image_shape, "__iter__") and not isinstance(image_shape, (str, bytes))
        shape = tuple(image_shape) if iterable else ()
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(
                f"image_shape must be (height, width) or (channels, height, width) of positive integers, "
                f"got {image_shape!r}."
            )
        depth, height, width = shape
        if depth * height * width != n_features_in:
            raise ValueError(
                f"image_shape={image_shape!r} holds {depth * height * width} pixels, but the rows have "
                f"{n_features_in} features."
            )
    if min(shape[1:]) < 2:
        raise ValueError(
            f"ConvNet needs images of at least 2x2 pixels (its max-pool halves each side), got "
            f"image_shape={image_shape!r} for {n_features_in} features."
        )
    return tuple(int(s) for s in shape)
