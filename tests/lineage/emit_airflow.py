"""Emits an Airflow-shaped history to runledger with the real openlineage-python client.

Three runs of the DAG `etl_daily` (tasks `etl_daily.extract` and `etl_daily.load`, each
task run with parent and root facets naming its DAG run): the first two through the client's
`oauth2` auth against runledger's token endpoint, the third with an `api_key`. The second DAG
run's load fails with an errorMessage facet; the third's extract COMPLETE is delivered twice.
The expected answers are in tests/api/lineage.rs.

usage: emit_airflow.py URL CLIENT_ID CLIENT_SECRET API_KEY
"""

import sys
import uuid

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run, job_type_job, parent_run

PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/2.3.0"
NAMESPACE = "airflow"
DAG = "etl_daily"


def client(url, auth):
    return OpenLineageClient(
        config={
            "transport": {
                "type": "http",
                "url": url,
                "endpoint": "api/v1/lineage",
                "auth": auth,
                "retry": {"total": 2, "backoff_factor": 0.1},
            }
        }
    )


def job(name, kind):
    facet = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="AIRFLOW", jobType=kind)
    return Job(namespace=NAMESPACE, name=name, facets={"jobType": facet})


def parent_facet(dag_run):
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=dag_run),
        job=parent_run.Job(namespace=NAMESPACE, name=DAG),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=dag_run),
            job=parent_run.RootJob(namespace=NAMESPACE, name=DAG),
        ),
    )


def event(kind, time, run_id, job_, facets=None, outputs=None):
    return RunEvent(
        eventType=kind,
        eventTime=time,
        run=Run(runId=run_id, facets=facets or {}),
        job=job_,
        producer=PRODUCER,
        inputs=[InputDataset(namespace="postgres://source:5432", name="public.orders")],
        outputs=outputs or [],
    )


def dag_run(emitter, number, day, tasks, ok, dag_end_clock):
    """One DAG run on 2024-03-`day`: `tasks` is [(task, start "HH:MM:SS", end, ok, repeat)]."""
    dag_run_id = str(uuid.UUID(int=0x0190A4C6_0000_7000_8000_0000000D0000 + number))
    at = lambda clock: f"2024-03-{day:02d}T{clock}.000000+00:00"
    emitter.emit(event(RunState.START, at("02:00:00"), dag_run_id, job(DAG, "DAG")))
    for index, (task, start, end, task_ok, repeat) in enumerate(tasks):
        run_id = str(uuid.UUID(int=0x0190A4C6_0000_7000_8000_0000000A0000 + number * 16 + index))
        facets = {"parent": parent_facet(dag_run_id)}
        emitter.emit(event(RunState.START, at(start), run_id, job(task, "TASK"), facets))
        done = dict(facets)
        if not task_ok:
            done["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message="duplicate key value violates unique constraint", programmingLanguage="python"
            )
        outputs = [OutputDataset(namespace="postgres://warehouse:5432", name=f"public.{task}")]
        end_event = event(
            RunState.COMPLETE if task_ok else RunState.FAIL, at(end), run_id, job(task, "TASK"), done, outputs
        )
        for _ in range(2 if repeat else 1):
            emitter.emit(end_event)
    dag_end = RunState.COMPLETE if ok else RunState.FAIL
    emitter.emit(event(dag_end, at(dag_end_clock), dag_run_id, job(DAG, "DAG")))


def main():
    url, client_id, client_secret, api_key = sys.argv[1:5]
    oauth = client(
        url,
        {
            "type": "oauth2",
            "clientId": client_id,
            "clientSecret": client_secret,
            "tokenEndpoint": f"{url}/v1/oauth/token",
        },
    )
    dag_run(
        oauth,
        1,
        10,
        [("etl_daily.extract", "02:00:01", "02:00:31", True, False), ("etl_daily.load", "02:00:32", "02:01:32", True, False)],
        True,
        "02:01:33",
    )
    dag_run(
        oauth,
        2,
        11,
        [("etl_daily.extract", "02:00:01", "02:00:21", True, False), ("etl_daily.load", "02:00:22", "02:00:32", False, False)],
        False,
        "02:00:33",
    )
    keyed = client(url, {"type": "api_key", "apiKey": api_key})
    dag_run(
        keyed,
        3,
        12,
        [("etl_daily.extract", "02:00:01", "02:00:41", True, True), ("etl_daily.load", "02:00:42", "02:01:02", True, False)],
        True,
        "02:01:03",
    )
    print("emitted 3 DAG runs")


if __name__ == "__main__":
    main()
