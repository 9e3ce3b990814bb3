"""`evaltui`: a Textual dashboard of campaigns, pools and logs.

    evaltui [--campaign NAME] [--api URL] [--home .evalq] [--refresh SECONDS]   # + PREFECT_API_AUTH_STRING

Modules, data side first:
- `models`: the frozen snapshots the panels render.
- `source`: the facade the app holds (`Source`), over one module per concern:
  `gateway` (the Prefect client, raw reads and pages, the campaign's plan), `queue` (counts by
  state, the run index and its sync, team x task rows, episode pages), `pools` (pool and server
  status, holders, quarantine marks), `logs` (backfill and live tail), `detail` (the episode
  screen, why it waits), `actions` (retry request, cancel, pause).
- `aggregate`: pure functions (state buckets, rate/ETA, utilization history, log filtering);
  `run_index`: every run of the campaign and its jobs counted as they change (pure).
- `loop`: the background asyncio loop all I/O runs on; `messages`: what it posts to the UI.
- `app`: the App (timer -> thread worker -> messages -> widgets); `commands`: palette entries;
  `watched`: which Prefect server it watches (evalq's rule, `flows/runtime/discovery.py`).
- `widgets/`: one module per panel (queue, pools, logs, episode detail, banner); `evaltui.tcss`.
- `seed`: episodes in known states written through the API, for tests, the bench and demos.
"""
