"""What an episode leaves behind, and what is read back from it: the metrics files with their
`evalq` block (`metrics_files.py`), videos (`videos.py`), the leaderboard (`leaderboard.py`).

May import: `flows/naming.py` only (docs/architecture.md, "Layers"). Pure but for file I/O.
"""
