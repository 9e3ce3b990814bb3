"""An external evaluator speaking the `command:` line protocol (see flows/evaluators/command.py).

argv: <metrics_path> <exit_code> [<video_path>]. Prints READY, reads its server, writes
metrics (and a fake video when given a path), exits; on a non-zero exit code its last
stderr lines say why (the last one names a URL with a password in it).
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
if exit_code:
    print(f"giving up: instance {metrics_path.rsplit('/', 1)[-1]} is broken", file=sys.stderr, flush=True)
    print("to retry, log in at https://team:hunter22@policy.example/", file=sys.stderr, flush=True)
sys.exit(exit_code)
