"""An external evaluator speaking the `command:` line protocol (see flows/evaluators/command.py).

argv: <metrics_path> <exit_code> [<video_path>]. Prints READY, reads its server, writes
metrics (and a fake video when given a path), exits.
"""

import json
import sys

metrics_path, exit_code = sys.argv[1], int(sys.argv[2])
video_path = sys.argv[3] if len(sys.argv) > 3 else None
print("loading simulator", flush=True)
print("READY", flush=True)
server = json.loads(sys.stdin.readline())
with open(metrics_path, "w") as handle:
    json.dump({"success": True, "server_seen": f"{server['host']}:{server['port']}"}, handle)
if video_path:
    with open(video_path, "wb") as handle:
        handle.write(b"fake mp4 of " + server["url"].encode())
sys.exit(exit_code)
