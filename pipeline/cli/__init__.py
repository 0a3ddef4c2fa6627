"""`demand`: the command line of the demand forecaster, one module per command group.

Results go to stdout (a table, or one JSON document with --json); logs and
progress go to stderr. Heavy libraries are imported inside the commands, so
`demand --help` starts instantly. Every option can also be set from the
environment as DEMAND_<COMMAND>_<OPTION> (e.g. DEMAND_TRAIN_EPOCHS), and the
registry folder as DEMAND_MODEL_DIR.

- base: the group, the options shared by commands, errors and signals;
- data, training, models, serving, scoring, store: the commands.
"""

from . import data, models, scoring, serving, store, training  # noqa: F401  (each registers its commands on main)
from .base import main
from .training import check_plot_path

__all__ = ["check_plot_path", "main"]
