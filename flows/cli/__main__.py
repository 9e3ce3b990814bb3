"""`python -m flows.cli`: how SLURM pilots and detached servers run evalq with this Python."""

from flows.cli.root import app

app(prog_name="evalq")
