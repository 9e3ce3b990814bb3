"""Google Cloud Logging: pipe any output into a log, label episode logs, read logs back.

Modules: `client` (the Cloud Logging client: project, credentials, test endpoint), `severity`
(a line's log level, pure), `handler` (run records, labelled), `attach` (what flows call once:
`attach_cloud_logging(...)`, on when asked), `stream` (`evalq stream-logs`), `read`
(`evalq logs`), `cli` (both commands).

May import: `flows/naming.py` only (docs/architecture.md, "Layers").
"""
