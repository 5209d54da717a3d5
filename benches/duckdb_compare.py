#!/usr/bin/env python3
"""DuckDB beside runledger, on the same import file, for the README's Performance section.

usage: pip install duckdb && python3 benches/duckdb_compare.py RUNS.ndjson [--threads N] [--load-only]

Loads the file (`runledger generate --no-outputs` output) into a DuckDB database file, prints
the load rate and the file's bytes per run, then keeps the last report of each task run (as
runledger does) and times, in process, the questions runledger's criterion benchmark asks
(`cargo bench --bench queries`): range stats of a task over 2025-01-03 05:06:07 ..
2025-12-29 17:43:21, aggregated stats of its pipeline by month x 12 (pipeline runs counted once,
successful when every task run succeeded, at their latest task run) and the pipeline's last run,
for the busiest pipeline (dense) and the median one by runs (sparse). Medians of 20 runs.
"""
import argparse
import os
import statistics
import tempfile
import time

import duckdb

RANGE = ("2025-01-03 05:06:07", "2025-12-29 17:43:21.999999")


def timed(con, sql, params, repeat=20):
    con.execute(sql, params).fetchall()  # warm
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        con.execute(sql, params).fetchall()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load-only", action="store_true",
                        help="only load the file (benches/import_table.sh)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="duckdb-compare-")
    path = os.path.join(work, "runs.duckdb")
    con = duckdb.connect(path)
    con.execute(f"SET threads = {args.threads}")

    started = time.perf_counter()
    con.execute(
        """CREATE TABLE raw AS SELECT * FROM read_json(?, format = 'newline_delimited',
           columns = {task_run_uuid: 'UUID', pipeline_run_uuid: 'UUID', pipeline_uuid: 'UUID',
                      task_uuid: 'UUID', task_type: 'VARCHAR', organization_uuid: 'UUID',
                      is_successful: 'BOOLEAN', duration: 'UINTEGER', executed_at: 'TIMESTAMP',
                      is_initial_task: 'BOOLEAN', is_final_task: 'BOOLEAN',
                      metric_value: 'DOUBLE'})""",
        [args.runs],
    )
    con.execute("CHECKPOINT")
    load = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    size = os.path.getsize(path)
    print(f"load: {rows} rows in {load:.1f} s ({rows / load:,.0f} rows/s), "
          f"{size / rows:.0f} bytes per run on disk", flush=True)
    if args.load_only:
        return

    started = time.perf_counter()
    con.execute(
        """CREATE TABLE runs AS SELECT * FROM (
             SELECT *, row_number() OVER (PARTITION BY task_run_uuid ORDER BY rowid DESC) AS n
             FROM raw) WHERE n = 1"""
    )
    print(f"keeping the last report of each task run: {time.perf_counter() - started:.1f} s")

    counts = con.execute(
        "SELECT pipeline_uuid, count(*) AS c FROM runs GROUP BY 1 ORDER BY c DESC, 1"
    ).fetchall()
    subjects = [("dense", counts[0][0]), ("sparse", counts[len(counts) // 2][0])]
    for label, pipeline in subjects:
        task = con.execute(
            "SELECT task_uuid FROM runs WHERE pipeline_uuid = ? GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            [pipeline],
        ).fetchone()[0]
        task_range = timed(
            con,
            """SELECT count(*) FILTER (WHERE is_successful), count(*) FILTER (WHERE NOT is_successful),
                      avg(duration) FROM runs
               WHERE task_uuid = ? AND executed_at BETWEEN ? AND ?""",
            [task, *RANGE],
        )
        month_x12 = timed(
            con,
            """SELECT date_trunc('month', ended) AS bucket, count(*) FILTER (WHERE ok),
                      count(*) FILTER (WHERE NOT ok), avg(total)
               FROM (SELECT bool_and(is_successful) AS ok, sum(duration) AS total,
                            max(executed_at) AS ended
                     FROM runs WHERE pipeline_uuid = ? GROUP BY pipeline_run_uuid)
               WHERE ended >= '2025-01-01' AND ended < '2026-01-01' GROUP BY 1 ORDER BY 1""",
            [pipeline],
        )
        last_run = timed(
            con,
            """SELECT pipeline_run_uuid, bool_and(is_successful), sum(duration), max(executed_at) AS ended
               FROM runs WHERE pipeline_uuid = ?
                 AND pipeline_run_uuid = (SELECT pipeline_run_uuid FROM runs WHERE pipeline_uuid = ?
                                          ORDER BY executed_at DESC, pipeline_run_uuid DESC LIMIT 1)
               GROUP BY 1""",
            [pipeline, pipeline],
        )
        print(f"{label} pipeline {pipeline}: task range stats {task_range * 1e3:.2f} ms, "
              f"pipeline month x 12 {month_x12 * 1e3:.2f} ms, last run {last_run * 1e3:.2f} ms")
    con.close()


if __name__ == "__main__":
    main()
