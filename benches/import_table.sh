#!/usr/bin/env bash
# The import table of issue 21 in one command: `runledger import` beside DuckDB loading the same
# file, one after the other, on three shapes of realistic runs (random v4 UUIDs, 50
# organizations, 2,000 mostly sparse pipelines, no outputs):
#   default   `runledger generate --runs N --no-outputs` (a year, time order, late tail)
#   3-years   the same over 3 years (`--days 1095`)
#   by-uuid   the 3-years file sorted by task-run UUID (as the platform's ClickHouse export is
#             ordered; re-reports of one task run keep their order)
# usage: benches/import_table.sh [N...]   (default 1000000; e.g. 1000000 10000000)
# Needs python3 (DuckDB is installed into target/venv from PyPI when missing) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000000}")
work=target/import-table
mkdir -p "$work"
venv=target/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import duckdb' 2>/dev/null || "$venv/bin/pip" install -q duckdb
cargo build --release --quiet
bin=target/release/runledger

# The import's rate, bytes per run after its repack and peak RSS (kB), of one file.
import_one() {
    local file=$1 runs=$2 dir="$work/data"
    rm -rf "$dir" && mkdir -m 700 "$dir"
    local out
    out=$( { /usr/bin/time -f 'rss %M' "$bin" import --data-dir "$dir" "$file"; } 2>&1 )
    local rate rss bytes
    rate=$(grep -o '([0-9]* runs/s)' <<<"$out" | tr -dc 0-9)
    rss=$(grep -o '^rss [0-9]*' <<<"$out" | tr -dc 0-9)
    bytes=$(stat -c %s "$dir/runledger.redb")
    echo "$rate $((bytes / runs)) $((rss / 1024))"
}

# DuckDB's load rate and bytes per run of one file.
duckdb_one() {
    "$venv/bin/python" benches/duckdb_compare.py "$1" --load-only |
        sed -n 's/.*(\([0-9,]*\) rows\/s), \([0-9]*\) bytes per run.*/\1 \2/p' | tr -d ,
}

printf '| runs | shape | runledger import (runs/s) | B/run | peak RSS (MiB) | DuckDB load (rows/s) | B/run | ratio |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
    default="$work/default-$n.ndjson" years="$work/3-years-$n.ndjson" by_uuid="$work/by-uuid-$n.ndjson"
    [ -s "$default" ] || "$bin" generate --runs "$n" --no-outputs -o "$default"
    [ -s "$years" ] || "$bin" generate --runs "$n" --days 1095 --no-outputs --seed 2 -o "$years"
    [ -s "$by_uuid" ] || LC_ALL=C sort -s -t'"' -k4,4 "$years" > "$by_uuid"
    for shape in default 3-years by-uuid; do
        file="$work/$shape-$n.ndjson"
        read -r rate bytes rss < <(import_one "$file" "$n")
        read -r drate dbytes < <(duckdb_one "$file")
        ratio=$(python3 -c "print(f'1/{$drate / $rate:.1f}')")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$shape" "$rate" "$bytes" "$rss" "$drate" "$dbytes" "$ratio"
    done
done
