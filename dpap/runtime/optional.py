"""The dependencies a module may import inside a function instead of at its top: each is
heavy to import and needed by one path only, so importing dpap (or ``dpap --help``) does
not pay for it. Every other import sits at the top of its module
(``tests/test_architecture.py`` holds the package to this list)."""

LAZY_IMPORTS: dict[str, str] = {
    "neurobench": "the evaluate stage's NeuroBench metrics only (it imports snntorch and more)",
    "torchvision": "reading CIFAR-10 and the IDX data sets only",
    "tonic": "event data sets (N-MNIST, DVS-Gesture) only",
    "sklearn": "the digits data set only",
    "sqlalchemy": "RDB storages of a search (PostgreSQL) only",
    "optuna_dashboard": "`dpap dashboard` only",
    "ruamel": "editing params.yaml in place (presets, best trials) only",
    "tqdm": "progress bars of an interactive run only",
    "matplotlib": "figures only",
    "fcntl": "POSIX only: a file lock is a no-op where it is missing",
}
"""Top-level package name → the one path that needs it."""

LAZY_ENTRY_POINTS: dict[str, str] = {
    "dpap/cli.py": "the `dpap` command imports each subcommand's layers when it runs, so `dpap --help` and `dpap --version` stay fast",
}
"""Modules that may import dpap's own layers inside functions, and why."""
