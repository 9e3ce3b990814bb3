#!/usr/bin/env bash
# bench/startstop.sh shared|embedded: start/stop overhead of `evalq campaign run`: command start -> first episode on a server; last episode end -> exit
set -u
mode=$1   # shared (EVALQ_SERVER_HOME=/tmp/ss-server has a running `evalq server`) | embedded
EX=$(cd "$(dirname "$0")/.." && pwd)/examples/challenge
W=$(mktemp -d /tmp/ss-XXXX); cd "$W"
evalq generate --test-instances-dir $EX/test_instances --submissions-dir $EX/challenge_submissions \
  --resources-raw-file $EX/demo-resources-raw.json --results-dir results >/dev/null 2>&1
python - <<'P'
import json; jobs=json.load(open("jobs.json")); open("only.txt","w").write("\n".join(j["id"] for j in jobs[:6])+"\n")
P
evalq policy-servers resources.json --log busy.jsonl >/dev/null 2>&1 & ps_pid=$!
sleep 3
unset PREFECT_API_URL
if [ "$mode" = shared ]; then export EVALQ_SERVER_HOME=/tmp/ss-server; else export EVALQ_SERVER_HOME=$W/none; fi
t0=$(date +%s.%N)
evalq campaign run --jobs jobs.json --resources resources.json --results-dir results --name ss --only only.txt \
  --evaluator-option steps=10 --evaluator-option step_seconds=0.1 --evaluator-option load_seconds=0.5 > out.txt 2>&1
rc=$?; t1=$(date +%s.%N)
kill $ps_pid
python - "$t0" "$t1" "$rc" "$mode" <<'P'
import json,sys
t0,t1,rc,mode=float(sys.argv[1]),float(sys.argv[2]),sys.argv[3],sys.argv[4]
iv=[json.loads(l) for l in open("busy.jsonl")]
first=min(i["start"] for i in iv); last=max(i["end"] for i in iv)
print(f"{mode}: rc={rc} start {first-t0:.1f} s, episodes' span {last-first:.1f} s, stop {t1-last:.1f} s, total {t1-t0:.1f} s")
P
grep -ci "error\|warning\|traceback" out.txt
