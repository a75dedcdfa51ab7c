"""worldmodels: DreamerV3-style model-based reinforcement learning with learned world models, in PyTorch.

`worldmodels.fit(env, overrides)` trains from Python (see worldmodels.api); `python -m worldmodels.train` from the
command line.
"""

from worldmodels.api import fit

__all__ = ["fit"]
