"""Meta-training: the skorch training loop, the meta-learned model, and how the work is run.

:func:`train` runs the outer updates inside a skorch ``NeuralNet``
(:class:`MetaNet`), so skorch callbacks and ``History`` work unchanged;
``Ranks`` shares them across ``torch.distributed`` processes; the threads and
compile policies decide how torch runs them. Nothing here knows about
scikit-learn.
"""

from ._compiling import cache_key, mark_warm, should_compile
from ._distributed import Ranks
from ._loop import MetaNet, train
from ._model import MetaModel
from ._threads import choose, forward_flops, intra_op_threads, thread_policy

__all__ = [
    "MetaModel",
    "MetaNet",
    "Ranks",
    "cache_key",
    "choose",
    "forward_flops",
    "intra_op_threads",
    "mark_warm",
    "should_compile",
    "thread_policy",
    "train",
]
