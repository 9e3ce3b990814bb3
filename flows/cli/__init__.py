"""The command line (`evalq`): the root app (`root.py`) and one module per command group.

The front end on top of everything: it may import any part of `flows/` (and `flows/grader/`'s
commands), and nothing imports it back (docs/architecture.md, "Layers"); `workpools/` adds its
groups through the `evalq.commands` entry points. Run as `evalq` or `python -m flows.cli`.
"""


def __getattr__(name: str):
    """`flows.cli:app`, the `evalq` script's target (pyproject.toml), built on first use."""
    if name == "app":
        from flows.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
