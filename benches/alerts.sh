#!/usr/bin/env bash
# The alert figures of issue 23 in one command: gRPC ingest of realistic runs (random v4 UUIDs,
# 2,000 mostly sparse pipelines, `runledger bench`'s workload) on a fresh server, without rules
# and with alert rules, and how soon a firing alert reaches a webhook receiver on loopback.
#   none   no rules
#   each   RULES rules, one on each of RULES pipelines (failed 1, failure_rate 24h > 0.2, slow
#          2 x p95 7d, in turn), delivered to a local receiver
#   all    10 of them on every pipeline of the organization, the rest as in `each`
# Each run: a fresh server, a 3 s bench that makes the pipelines, the rules, then the measured
# bench. Two delays are printed: commit -> first delivery attempt, from the server's histogram
# `runledger_alert_first_attempt_seconds` (bucket bounds: "p99 <= 0.025 s"), and report
# received -> receiver's first request, which the receiver notes against the transition's
# `timestamp` (when the report that fired it was received, so it includes the report's wait
# in the write queue and its commit).
# usage: benches/alerts.sh [SHAPE [RULES [SECONDS]]]   (default: each 1000 15)
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-each}
rules=${2:-1000}
secs=${3:-15}
[ "$shape" = none ] && rules=0
cargo build --release --quiet
bin=target/release/runledger
work=$(mktemp -d /tmp/runledger-alerts.XXXX)
chmod 700 "$work"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

# The receiver: answers 200, appends "arrival_seconds transition_seconds type" per request.
python3 - "$work/received" > "$work/receiver.port" <<'PY' &
import json, sys, time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
out = open(sys.argv[1], "a", buffering=1)
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        arrived = time.time()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        at = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
        out.write(f"{arrived} {at} {body['type']}\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
for _ in $(seq 50); do [ -s "$work/receiver.port" ] && break; sleep 0.1; done
hook="http://127.0.0.1:$(cat "$work/receiver.port")/hook"

port=$((20000 + RANDOM % 20000))
hport=$((port + 1))
"$bin" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:$port --http-addr 127.0.0.1:$hport \
  --webhook-allow-net 127.0.0.1/32 > "$work/serve.log" 2>&1 &
for _ in $(seq 100); do grep -q '"client_secret"' "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
creds=$(grep '"client_secret"' "$work/serve.log" | head -1)
export RUNLEDGER_CLIENT_ID=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['client_id'])" "$creds")
export RUNLEDGER_CLIENT_SECRET=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['client_secret'])" "$creds")
load=(--grpc-addr 127.0.0.1:$port --http-addr 127.0.0.1:$hport --queries none --ingest-streams 4
  --ingest-batch 1000 --stream-messages 10 --seed-runs 0 --ingest-catalog 23)
"$bin" bench "${load[@]}" -d 3 > "$work/seed.log" 2>&1

python3 - "$hport" "$rules" "$shape" "$hook" <<'PY'
import json, os, sys, urllib.parse, urllib.request
port, rules, shape, hook = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
base = f"http://127.0.0.1:{port}"
form = urllib.parse.urlencode({"grant_type": "client_credentials",
    "client_id": os.environ["RUNLEDGER_CLIENT_ID"], "client_secret": os.environ["RUNLEDGER_CLIENT_SECRET"]}).encode()
auth = {"authorization": "Bearer " + json.load(urllib.request.urlopen(f"{base}/v1/oauth/token", form))["access_token"]}
pipelines, cursor = [], ""
while len(pipelines) < rules:
    answer = urllib.request.urlopen(urllib.request.Request(f"{base}/v1/stats/pipelines?limit=1000&cursor={cursor}", headers=auth))
    pipelines += [p["pipeline_uuid"] for p in json.load(answer)]
    cursor = answer.headers.get("x-next-cursor")
    if not cursor:
        break
kinds = [("failed", {"consecutive": 1}), ("failure_rate", {"window": "24h", "above": 0.2, "min_runs": 3}),
         ("slow", {"factor": 2, "percentile": 95, "window": "7d"})]
for i in range(rules):
    kind, params = kinds[i % 3]
    pipeline = None if shape == "all" and i < 10 else pipelines[i % len(pipelines)]
    body = {"name": f"rule {i}", "pipeline_uuid": pipeline, "kind": kind, "params": params,
            "webhook": {"url": hook, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
    urllib.request.urlopen(urllib.request.Request(f"{base}/v1/alerts/rules", json.dumps(body).encode(),
                                                  {**auth, "content-type": "application/json"})).read()
print(f"shape {shape}: {rules} rules over {len(pipelines)} of the organization's pipelines")
PY
: > "$work/received"
"$bin" bench "${load[@]}" -d "$secs" 2>&1 | grep -E "acknowledged|p99"
python3 - "$work/received" <<'PY'
import sys
lags = sorted(float(a) - float(t) for a, t, kind in (line.split() for line in open(sys.argv[1])) if kind == "alert.firing")
lines = sum(1 for _ in open(sys.argv[1]))
print(f"requests received: {lines}")
if not lags:
    print("no firing alert was delivered")
else:
    pick = lambda p: lags[min(len(lags) - 1, int(p / 100 * len(lags)))]
    print(f"firing deliveries: {len(lags)}; report received -> receiver's first request: "
          f"p50 {pick(50) * 1000:.0f} ms, p99 {pick(99) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
PY
curl -s "http://127.0.0.1:$hport/metrics" | python3 -c '
import re, sys
buckets = [(float(m.group(1)), int(m.group(2))) for m in
           (re.match(r"runledger_alert_first_attempt_seconds_bucket\{le=\"([^\"]+)\"\} (\d+)", l) for l in sys.stdin) if m]
total = max((n for _, n in buckets), default=0)
if total == 0:
    print("no first attempt measured")
else:
    bound = lambda p: next(le for le, n in sorted(buckets) if n >= p / 100 * total)
    under = next((n for le, n in buckets if le == 1.0), 0)
    print(f"commit -> first attempt ({total} transitions): p50 <= {bound(50)} s, p99 <= {bound(99)} s, "
          f"{100 * under / total:.2f}% within 1 s")
'
