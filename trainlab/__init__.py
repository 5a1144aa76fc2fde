"""trainlab: a command-line lab for the craft of training neural networks.

    import trainlab
    result = trainlab.train("optimizer=sgd", "norm=layernorm", "trainer.max_steps=100")
    result.summary["final"]["val_acc"], result.rows[-1], result.model

The same checks and the same run files as the `trainlab` command; `trainlab.compose(...)` gives the validated
config alone. Importing trainlab imports neither torch nor Hydra: they load when a run starts.
"""
__version__ = "0.2.0"

from trainlab.config import ConfigError  # noqa: E402,F401  (no torch, no Hydra: a plain ValueError subclass)


def train(*overrides, run_dir=None, config_dir=None, progress=False, quiet=False):
    """Run one configuration (Hydra override strings) and return a Result: summary, metrics rows, model, run_dir,
    verdict. quiet=True prints nothing. (Once the loop's module trainlab/train.py is imported, `trainlab.train` is
    that module — callable the same way: see the end of train.py.)"""
    from trainlab.api import train as _train

    return _train(*overrides, run_dir=run_dir, config_dir=config_dir, progress=progress, quiet=quiet)


def compose(*overrides, config_dir=None):
    """The validated config (a plain dict of groups) that `trainlab OVERRIDES` would run."""
    from trainlab.api import compose as _compose

    return _compose(*overrides, config_dir=config_dir)


api_train = train  # the function itself, kept: importing trainlab/train.py rebinds `trainlab.train` to that module
