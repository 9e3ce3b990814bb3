"""`evalq k8s render` and `evalq k8s submit`: organizers' evaluation configs as Kubernetes Jobs."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Kubernetes evaluation jobs from organizers' configs.")
