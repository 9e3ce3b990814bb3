"""The demo's parts: policy servers that count their own capacity violations
(`policy_server.py`) and what their busy log says (`busy.py`). `evalq demo` is `flows/cli/demo.py`.

May import: `flows/naming.py` only (docs/architecture.md, "Layers").
"""
