"""When ``compile="auto"`` compiles the meta-loss: long fits, or fits whose compilation torch has cached.

Compiling the meta-loss with :func:`torch.compile` makes an update 2-3x
faster on CPU, but the first compilation of a shape takes 20-45 s on a
2-core CPU (``benchmarks/results/compile_cache.md``). torch caches what it compiled
(inductor's FX graph cache and AOTAutograd's cache, on by default, in
``TORCHINDUCTOR_CACHE_DIR``), and a second compilation of the same graphs
takes 2-5 s. Which graphs torch would find in its cache cannot be
asked cheaply, so after every fit that compiled, a marker named by the fit's
shapes is written beside torch's cache; ``compile="auto"`` then compiles a
fit with a marker once it is long enough to pay back the few seconds.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["COLD_MIN_ITER", "WARM_MIN_ITER", "cache_key", "is_warm", "mark_warm", "should_compile"]

# Outer updates from which compiling pays back, with a margin (benchmarks/results/compile_cache.md, 2-core
# CPU, MLP 40-40, meta-batch 25): compiling took 22-42 s with cold caches and 1.9-4.8 s with warm ones, and
# made an update 1.8-3.2x faster, so it paid back after 2,700-6,500 updates cold and 310-820 warm.
COLD_MIN_ITER = 10_000
WARM_MIN_ITER = 1_000


def _folder() -> Path:
    try:  # where torch keeps its compile caches
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        root = Path(cache_dir())
    except Exception:  # a torch without it: its documented default
        root = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir()) / "torchinductor")
    return root / "sklearn_meta"


def cache_key(*parts) -> str:
    """A name for what a compilation depends on: the given parts, and which torch and Python run it.

    The torch installation's path is part of it: another environment on the
    same machine shares torch's cache folder but not what it cached.
    """
    text = repr((torch.__version__, torch.__file__, sys.prefix, sys.version_info[:2], *parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def is_warm(key: str) -> bool:
    """A fit with this key compiled before, so torch's caches hold its graphs."""
    return bool(key) and (_folder() / key).is_file()


def mark_warm(key: str) -> None:
    """Record that a fit with this key compiled (never fails: the marker is only a hint)."""
    try:
        folder = _folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / key).touch()
    except OSError:
        pass


def should_compile(setting, max_iter: int, key: str) -> bool:
    """``compile=True``/``False`` as given; ``"auto"``: long fits, and shorter ones torch has cached."""
    if setting != "auto":
        return bool(setting)
    return max_iter >= COLD_MIN_ITER or (max_iter >= WARM_MIN_ITER and is_warm(key))
