//! The OpenAPI 3 document of the REST API, served at `/v1/openapi.json`. A test requests every
//! operation it lists and checks the responses against its schemas, so it stays true.

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => {
                "A malformed UUID, date, period, n, fill, limit or cursor, or `from` after `to`"
            }
            "401" => "A missing, unknown, expired or revoked bearer token",
            "403" => "The token lacks the scope this operation needs",
            "404" => "No such pipeline or task for this organization (or no such route)",
            "405" => "The route does not take this method",
            "409" => "The pipeline has no initial task to start",
            "413" => "The request body is over 64 KiB",
            "429" => {
                "Too many of this organization's task runs wait for an executor, or the write queue is full; nothing was started; retry after the `Retry-After` seconds"
            }
            "503" => {
                "The service cannot do this now (shutting down, serving read-only, or reopening the database after a failed write); retry after the `Retry-After` seconds"
            }
            _ => "Error",
        };
        responses.insert(
            code.to_string(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
    }
    Value::Object(responses)
}

/// What a read can answer besides 200: reads are never queued or throttled, so never 429.
const READ_ERRORS: &[&str] = &["400", "401", "403", "404", "503"];

fn with(mut responses: Value, code: &str, response: Value) -> Value {
    responses
        .as_object_mut()
        .expect("responses are an object")
        .insert(code.to_string(), response);
    responses
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn stats_operation(summary: &str, parameters: Value, response: Value) -> Value {
    json!({
        "summary": summary,
        "security": [{"oauth2": ["stats:read"]}, {"bearer": []}],
        "parameters": parameters,
        "responses": with(error_responses(READ_ERRORS), "200", response),
    })
}

fn run_operation(edition: &str) -> Value {
    json!({
        "post": {
            "summary": format!("Run a {edition}: one pending task run per initial task"),
            "description": "The pending task runs are handed to the organization's executors over gRPC (runledger.v1.Ingest/WatchPendingTaskRuns). The request body is ignored.",
            "security": [{"oauth2": ["pipelines:run"]}, {"bearer": []}],
            "parameters": [{"$ref": "#/components/parameters/uuid"}],
            "responses": with(
                error_responses(&["400", "401", "403", "404", "409", "413", "429", "503"]),
                "201",
                json_response("The new task runs", json!({"type": "array", "items": {"$ref": "#/components/schemas/RunTask"}})),
            ),
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let kind = json!({"$ref": "#/components/parameters/kind"});
    let uuid = json!({"$ref": "#/components/parameters/uuid"});
    let from = json!({"$ref": "#/components/parameters/from"});
    let to = json!({"$ref": "#/components/parameters/to"});
    let token_parameters: Vec<Value> = [
        ("grant_type", "client_credentials or refresh_token", true),
        ("client_id", "The OAuth client's id (or use HTTP Basic authentication)", false),
        ("client_secret", "The OAuth client's secret (or use HTTP Basic authentication)", false),
        ("scope", "Space-separated scopes narrowing the grant: pipelines:run (alias workflows:run, echoed back as asked), stats:read, runs:write, alerts:write", false),
        ("refresh_token", "For grant_type refresh_token: the refresh token, used up by this request", false),
    ]
    .into_iter()
    .map(|(name, description, required)| {
        json!({"name": name, "in": "query", "required": required, "description": description, "schema": {"type": "string"}})
    })
    .collect();
    let token_operation = json!({
        "summary": "Issue an access and refresh token pair (OAuth2 client credentials or refresh token)",
        "description": "Parameters go in the query string or an application/x-www-form-urlencoded body.",
        "parameters": token_parameters,
        "responses": {
            "200": json_response("A token pair", json!({"$ref": "#/components/schemas/Token"})),
            "400": json_response("invalid_request, unsupported_grant_type, invalid_grant or invalid_scope", json!({"$ref": "#/components/schemas/OAuthError"})),
            "401": json_response("invalid_client: unknown client, wrong secret or revoked client", json!({"$ref": "#/components/schemas/OAuthError"})),
            "413": {"description": "The request body is over 64 KiB", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "429": json_response("Too many failed attempts (slow_down); retry after the Retry-After seconds", json!({"$ref": "#/components/schemas/OAuthError"})),
            "503": {"description": "The database is read-only or reopening: no token can be issued now", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        }
    });
    let mut token_post = token_operation.clone();
    token_post["requestBody"] = json!({
        "required": false,
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
            "grant_type": {"type": "string"}, "client_id": {"type": "string"}, "client_secret": {"type": "string"},
            "scope": {"type": "string"}, "refresh_token": {"type": "string"}
        }}}}
    });

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "runledger REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run statistics of pipelines and tasks, compatible with the public pipeline-platform API. A trailing slash is optional on every path. Path date-times are `Y-m-d H:i:s` (the space may be written `T` or %20) or `Y-m-d` alone, which means 00:00:00 when it starts a range and 23:59:59 when it ends one. Ranges are inclusive at second precision, in UTC."
        },
        "paths": {
            "/v1/oauth/token": {"get": token_operation, "post": token_post},
            "/v1/pipelines/{uuid}/runs/": run_operation("pipeline"),
            "/v1/workflows/{uuid}/runs/": run_operation("workflow"),
            "/v1/stats/pipelines": {
                "get": {
                    "summary": "The caller's organization's pipelines: each one's last run and its runs in the last 24 hours, 7 days and 30 days ending now",
                    "description": "Sorted by name (pipelines without a name last) then UUID; paged like logs. Answered from rollups.",
                    "security": [{"oauth2": ["stats:read"]}, {"bearer": []}],
                    "parameters": [
                        {"name": "limit", "in": "query", "required": false, "description": "Pipelines per page, 1 to 1000", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "cursor", "in": "query", "required": false, "description": "Where the page starts, from the previous page's X-Next-Cursor (or its Link rel=next URL)", "schema": {"type": "string"}}],
                    "responses": with(error_responses(&["400", "401", "403", "503"]), "200", {
                        let mut response = json_response("Pipelines", json!({"type": "array", "items": {"$ref": "#/components/schemas/PipelineOverview"}}));
                        response["headers"] = json!({
                            "Link": {"description": "`<url>; rel=\"next\"`: the next page, absent on the last", "schema": {"type": "string"}},
                            "X-Next-Cursor": {"description": "The next page's cursor, absent on the last page", "schema": {"type": "string"}}
                        });
                        response
                    }),
                }
            },
            "/v1/stats/pipelines/{uuid}/logs/{from}/{to}": {
                "get": {
                    "summary": "A page of a pipeline's finished task runs in a range, newest first",
                    "security": [{"oauth2": ["stats:read"]}, {"bearer": []}],
                    "parameters": [uuid, from, to,
                        {"name": "limit", "in": "query", "required": false, "description": "Entries per page, 1 to 1000", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "cursor", "in": "query", "required": false, "description": "Where the page starts, from the previous page's X-Next-Cursor (or its Link rel=next URL)", "schema": {"type": "string"}}],
                    "responses": with(error_responses(READ_ERRORS), "200", {
                        let mut response = json_response("Entries, newest first", json!({"type": "array", "items": {"$ref": "#/components/schemas/LogEntry"}}));
                        response["headers"] = json!({
                            "Link": {"description": "`<url>; rel=\"next\"`: the next page, absent on the last", "schema": {"type": "string"}},
                            "X-Next-Cursor": {"description": "The next page's cursor, absent on the last page", "schema": {"type": "string"}}
                        });
                        response
                    }),
                }
            },
            "/v1/stats/{kind}/{uuid}/stats/{from}/{to}": {
                "get": stats_operation(
                    "Successes, failures and average duration in a range, and the last run at or before its end",
                    json!([kind, uuid, from, to]),
                    json_response("Stats", json!({"$ref": "#/components/schemas/Stats"})),
                )
            },
            "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}": {
                "get": stats_operation(
                    "Stats of n consecutive calendar buckets from the one containing date_from, oldest first: only buckets with runs, or with fill=zero all n",
                    json!([kind, uuid,
                        {"name": "date_from", "in": "path", "required": true, "description": "Any instant of the first bucket: `Y-m-d` or `Y-m-d H:i:s`", "schema": {"type": "string"}},
                        {"name": "period", "in": "path", "required": true, "schema": {"type": "string", "enum": ["day", "week", "month", "quarter", "year"]}},
                        {"name": "n", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "fill", "in": "query", "required": false, "description": "`zero`: every bucket, empty ones with zero counts, a zero average and null percentiles", "schema": {"type": "string", "enum": ["zero"]}}]),
                    json_response("Buckets", json!({"type": "array", "items": {"$ref": "#/components/schemas/Bucket"}})),
                )
            },
            "/v1/stats/{kind}/{uuid}/last-run/stats": {
                "get": stats_operation(
                    "The latest finished run (404 when there is none)",
                    json!([kind, uuid]),
                    json_response("The last run", json!({"$ref": "#/components/schemas/LastRun"})),
                )
            },
            "/v1/stats/pipelines/{uuid}/running": {
                "get": {
                    "summary": "A page of a pipeline's task runs that started and have not finished, newest start first",
                    "description": "A run stuck here never ended. Paged like logs.",
                    "security": [{"oauth2": ["stats:read"]}, {"bearer": []}],
                    "parameters": [uuid,
                        {"name": "limit", "in": "query", "required": false, "description": "Entries per page, 1 to 1000", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "cursor", "in": "query", "required": false, "description": "Where the page starts, from the previous page's X-Next-Cursor (or its Link rel=next URL)", "schema": {"type": "string"}}],
                    "responses": with(error_responses(READ_ERRORS), "200", {
                        let mut response = json_response("Running task runs, newest start first", json!({"type": "array", "items": {"$ref": "#/components/schemas/RunningTaskRun"}}));
                        response["headers"] = json!({
                            "Link": {"description": "`<url>; rel=\"next\"`: the next page, absent on the last", "schema": {"type": "string"}},
                            "X-Next-Cursor": {"description": "The next page's cursor, absent on the last page", "schema": {"type": "string"}}
                        });
                        response
                    }),
                }
            },
            "/v1/alerts": {
                "get": {
                    "summary": "Firing and resolved alerts, newest first, paged like logs",
                    "security": [{"oauth2": ["stats:read"]}, {"bearer": []}],
                    "parameters": [
                        {"name": "limit", "in": "query", "required": false, "description": "Alerts per page, 1 to 1000", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "cursor", "in": "query", "required": false, "description": "Where the page starts, from the previous page's X-Next-Cursor (or its Link rel=next URL)", "schema": {"type": "string"}},
                        {"name": "pipeline_uuid", "in": "query", "required": false, "description": "Only this pipeline's alerts", "schema": {"type": "string"}},
                        {"name": "state", "in": "query", "required": false, "description": "Only alerts in this state", "schema": {"type": "string", "enum": ["firing", "resolved"]}}],
                    "responses": with(error_responses(READ_ERRORS), "200", {
                        let mut response = json_response("Alerts, newest first", json!({"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}));
                        response["headers"] = json!({
                            "Link": {"description": "`<url>; rel=\"next\"`: the next page, absent on the last", "schema": {"type": "string"}},
                            "X-Next-Cursor": {"description": "The next page's cursor, absent on the last page", "schema": {"type": "string"}}
                        });
                        response
                    }),
                }
            },
            "/v1/alerts/rules": {
                "post": {
                    "summary": "Create an alert rule: judged as runs are written, its transitions delivered as signed webhooks (see the README, Alerts)",
                    "security": [{"oauth2": ["alerts:write"]}, {"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewRule"}}}},
                    "responses": with(
                        {
                            let mut errors = error_responses(&["400", "401", "403", "409", "413", "503"]);
                            errors["400"]["description"] = json!("A malformed rule; the detail names the field (kind, params.window, webhook.url, ...), or a webhook URL in an internal range");
                            errors["409"]["description"] = json!("The organization holds the most rules it may (1,000)");
                            errors
                        },
                        "201",
                        json_response("The new rule's UUID", json!({"type": "object", "required": ["rule_uuid"], "properties": {"rule_uuid": {"type": "string"}}})),
                    ),
                },
                "get": {
                    "summary": "The organization's alert rules, oldest first (never their secrets)",
                    "security": [{"oauth2": ["alerts:write"]}, {"bearer": []}],
                    "responses": with(error_responses(&["401", "403", "503"]), "200", json_response("Rules", json!({"type": "array", "items": {"$ref": "#/components/schemas/Rule"}}))),
                }
            },
            "/v1/alerts/rules/{uuid}": {
                "get": {
                    "summary": "One alert rule",
                    "security": [{"oauth2": ["alerts:write"]}, {"bearer": []}],
                    "parameters": [uuid],
                    "responses": with(error_responses(&["400", "401", "403", "404", "503"]), "200", json_response("The rule", json!({"$ref": "#/components/schemas/Rule"}))),
                },
                "delete": {
                    "summary": "Delete an alert rule",
                    "security": [{"oauth2": ["alerts:write"]}, {"bearer": []}],
                    "parameters": [uuid],
                    "responses": with(error_responses(&["400", "401", "403", "404", "503"]), "204", json!({"description": "Deleted"})),
                }
            },
            "/api/v1/lineage": {
                "post": {
                    "summary": "Record one OpenLineage RunEvent (spec 2-0-x); also served at /v1/lineage",
                    "description": "The path OpenLineage HTTP clients use by default. Unknown fields and facets are ignored; DatasetEvents and JobEvents are accepted and change nothing. A run's pipeline is the job of its parent facet's root, else of its parent, else its own job; START/RUNNING keep it running, COMPLETE/FAIL/ABORT finish it with the duration since its START. Answered once durable. Overload is a 503 (OpenLineage clients retry server errors, not 429).",
                    "security": [{"oauth2": ["runs:write"]}, {"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "description": "An OpenLineage RunEvent: https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}}}},
                    "responses": with(
                        {
                            let mut errors = error_responses(&["400", "401", "403", "409", "413", "503"]);
                            errors["400"]["description"] = json!("A malformed event; the detail names the field (run.runId, eventTime, job.name, schemaURL, ...)");
                            errors["409"]["description"] = json!("The event contradicts what is stored (its job's task is a task of another pipeline)");
                            errors["413"]["description"] = json!("The event is over 1 MiB");
                            errors
                        },
                        "201",
                        json!({"description": "Recorded and durable; the body is empty"}),
                    ),
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}}
            }
        },
        "components": {
            "securitySchemes": {
                "oauth2": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "/v1/oauth/token", "refreshUrl": "/v1/oauth/token", "scopes": {
                    "pipelines:run": "Run pipelines (alias workflows:run)",
                    "stats:read": "Read stats and logs",
                    "runs:write": "Report task runs and register pipelines (gRPC)",
                    "alerts:write": "Create and delete alert rules"
                }}}},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "parameters": {
                "kind": {"name": "kind", "in": "path", "required": true, "description": "tasks, or pipelines (the older edition's name: workflows)", "schema": {"type": "string", "enum": ["tasks", "pipelines", "workflows"]}},
                "uuid": {"name": "uuid", "in": "path", "required": true, "description": "The task's or pipeline's UUID (any version)", "schema": {"type": "string", "format": "uuid"}},
                "from": {"name": "from", "in": "path", "required": true, "description": "Start of the range, inclusive: `Y-m-d H:i:s` or `Y-m-d`", "schema": {"type": "string"}},
                "to": {"name": "to", "in": "path", "required": true, "description": "End of the range, inclusive: `Y-m-d H:i:s` or `Y-m-d` (the whole day)", "schema": {"type": "string"}}
            },
            "schemas": {
                "Stats": {"type": "object", "required": ["num_of_successes", "num_of_failures", "average_duration", "is_last_run_successful", "last_run_executed_at", "last_run_duration"], "properties": {
                    "num_of_successes": {"type": "integer"},
                    "num_of_failures": {"type": "integer"},
                    "average_duration": {"type": "integer", "description": "Floor of the mean, ms; 0 with no runs"},
                    "is_last_run_successful": {"type": "boolean"},
                    "last_run_executed_at": {"type": "string", "nullable": true, "description": "`Y-m-d H:i:s`; null with no run at or before `to`"},
                    "last_run_duration": {"type": "integer", "description": "ms; 0 with no last run"},
                    "approximate": {"type": "boolean", "description": "Present (true) only when an edge before the retention cut was widened to its whole day, or the last run before the cut was asked for"},
                    "duration_p50": {"type": "integer", "nullable": true, "description": "Median duration, ms: the nearest-rank value within 1%; null with no runs"},
                    "duration_p90": {"type": "integer", "nullable": true, "description": "90th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "duration_p95": {"type": "integer", "nullable": true, "description": "95th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "duration_p99": {"type": "integer", "nullable": true, "description": "99th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "max_duration": {"type": "integer", "nullable": true, "description": "Longest duration, ms, exact; null with no runs"}
                }},
                "Bucket": {"type": "object", "required": ["date_from", "date_to", "num_of_successes", "num_of_failures", "average_duration"], "properties": {
                    "date_from": {"type": "string", "description": "The bucket's first second, `Y-m-d H:i:s`"},
                    "date_to": {"type": "string", "description": "The bucket's last second, `Y-m-d H:i:s`"},
                    "num_of_successes": {"type": "integer"},
                    "num_of_failures": {"type": "integer"},
                    "average_duration": {"type": "integer"},
                    "duration_p50": {"type": "integer", "nullable": true, "description": "Median duration, ms: the nearest-rank value within 1%; null with no runs"},
                    "duration_p90": {"type": "integer", "nullable": true, "description": "90th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "duration_p95": {"type": "integer", "nullable": true, "description": "95th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "duration_p99": {"type": "integer", "nullable": true, "description": "99th percentile, ms (nearest rank, within 1%); null with no runs"},
                    "max_duration": {"type": "integer", "nullable": true, "description": "Longest duration, ms, exact; null with no runs"}
                }},
                "PipelineOverview": {"type": "object", "required": ["pipeline_uuid", "name", "last_run", "last_24h", "last_7d", "last_30d"], "properties": {
                    "pipeline_uuid": {"type": "string", "format": "uuid"},
                    "name": {"type": "string", "nullable": true, "description": "null for a pipeline without a name"},
                    "last_run": {"allOf": [{"$ref": "#/components/schemas/LastRun"}], "nullable": true, "description": "As last-run/stats answers; null without a finished run"},
                    "last_24h": {"$ref": "#/components/schemas/Window"},
                    "last_7d": {"$ref": "#/components/schemas/Window"},
                    "last_30d": {"$ref": "#/components/schemas/Window"}
                }},
                "Window": {"type": "object", "required": ["num_of_successes", "num_of_failures", "average_duration", "duration_p50", "duration_p95"], "properties": {
                    "num_of_successes": {"type": "integer"},
                    "num_of_failures": {"type": "integer"},
                    "average_duration": {"type": "integer", "description": "Floor of the mean, ms; 0 with no runs"},
                    "duration_p50": {"type": "integer", "nullable": true, "description": "ms, nearest rank within 1%; null with no runs"},
                    "duration_p95": {"type": "integer", "nullable": true, "description": "ms, nearest rank within 1%; null with no runs"}
                }},
                "LastRun": {"type": "object", "required": ["is_successful", "executed_at", "duration"], "properties": {
                    "is_successful": {"type": "boolean"},
                    "executed_at": {"type": "string", "description": "`Y-m-d H:i:s`"},
                    "duration": {"type": "integer", "description": "ms; for a pipeline, the sum of its task runs'"}
                }},
                "LogEntry": {"type": "object", "required": ["workflow_run_uuid", "pipeline_run_uuid", "task_run_uuid", "task_uuid", "task_type", "is_successful", "duration", "output", "metric_value", "executed_at"], "properties": {
                    "workflow_run_uuid": {"type": "string"},
                    "pipeline_run_uuid": {"type": "string"},
                    "task_run_uuid": {"type": "string"},
                    "task_uuid": {"type": "string"},
                    "task_type": {"type": "string"},
                    "is_successful": {"type": "boolean"},
                    "duration": {"type": "integer"},
                    "output": {"type": "string", "description": "Standard base64 of nonce (24 bytes) || ciphertext || tag (16 bytes), XChaCha20-Poly1305 under the organization's output key, no associated data; \"\" for no output"},
                    "metric_value": {"type": "number", "nullable": true},
                    "executed_at": {"type": "string", "description": "RFC 3339 with Z, fractional seconds only when non-zero"}
                }},
                "NewRule": {"type": "object", "required": ["name", "kind", "webhook"], "properties": {
                    "name": {"type": "string"},
                    "pipeline_uuid": {"type": "string", "nullable": true, "description": "null: every pipeline of the organization"},
                    "kind": {"type": "string", "enum": ["failed", "failure_rate", "slow", "missing", "stuck"]},
                    "params": {"type": "object", "description": "failed {consecutive}; failure_rate {window: 1h|24h|7d, above, min_runs}; slow {factor, percentile, window}; missing {every} or {cron, grace}; stuck {running_for}"},
                    "webhook": {"type": "object", "required": ["url", "secret"], "properties": {
                        "url": {"type": "string"}, "secret": {"type": "string"}, "format": {"type": "string", "enum": ["json", "slack", "alertmanager"]}
                    }}
                }},
                "Alert": {"type": "object", "required": ["alert_id", "rule_uuid", "pipeline_uuid", "state", "since", "resolved_at", "rule_name", "kind", "pipeline_name", "pipeline_run_uuid", "observed"], "properties": {
                    "alert_id": {"type": "string"},
                    "rule_uuid": {"type": "string"},
                    "pipeline_uuid": {"type": "string"},
                    "state": {"type": "string", "enum": ["firing", "resolved"]},
                    "since": {"type": "string", "description": "RFC 3339 with Z: when it started firing"},
                    "resolved_at": {"type": "string", "nullable": true, "description": "RFC 3339 with Z; null while firing"},
                    "rule_name": {"type": "string"},
                    "kind": {"type": "string", "enum": ["failed", "failure_rate", "slow", "missing", "stuck"]},
                    "pipeline_name": {"type": "string"},
                    "pipeline_run_uuid": {"type": "string", "nullable": true},
                    "observed": {"type": "object", "description": "What the rule saw when it fired"}
                }},
                "Rule": {"type": "object", "required": ["rule_uuid", "name", "pipeline_uuid", "kind", "params", "webhook", "created_at"], "properties": {
                    "rule_uuid": {"type": "string"},
                    "name": {"type": "string"},
                    "pipeline_uuid": {"type": "string", "nullable": true},
                    "kind": {"type": "string", "enum": ["failed", "failure_rate", "slow", "missing", "stuck"]},
                    "params": {"type": "object"},
                    "webhook": {"type": "object", "required": ["url", "format"], "properties": {"url": {"type": "string"}, "format": {"type": "string"}, "disabled_at": {"type": "string", "description": "RFC 3339 with Z: when a delivery was answered 410 Gone (absent while enabled)"}}},
                    "created_at": {"type": "string", "description": "RFC 3339 with Z"}
                }},
                "RunningTaskRun": {"type": "object", "required": ["task_run_uuid", "task_uuid", "task_type", "workflow_run_uuid", "pipeline_run_uuid", "state", "started_at", "updated_at"], "properties": {
                    "task_run_uuid": {"type": "string"},
                    "task_uuid": {"type": "string"},
                    "task_type": {"type": "string"},
                    "workflow_run_uuid": {"type": "string"},
                    "pipeline_run_uuid": {"type": "string"},
                    "state": {"type": "string", "enum": ["running"]},
                    "started_at": {"type": "string", "description": "RFC 3339 with Z: its OpenLineage START, else when it was first reported running"},
                    "updated_at": {"type": "string", "description": "RFC 3339 with Z: when it was last reported"}
                }},
                "RunTask": {"type": "object", "required": ["id", "state", "task_uuid", "task_run_uuid", "workflow_run_uuid", "pipeline_run_uuid", "is_successful", "output", "errors", "created_at", "updated_at"], "properties": {
                    "id": {"type": "integer"},
                    "state": {"type": "string", "enum": ["pending"]},
                    "task_uuid": {"type": "string"},
                    "task_run_uuid": {"type": "string"},
                    "workflow_run_uuid": {"type": "string"},
                    "pipeline_run_uuid": {"type": "string"},
                    "is_successful": {"type": "boolean"},
                    "output": {"type": "string", "nullable": true},
                    "errors": {"type": "array", "nullable": true, "items": {"type": "string"}},
                    "created_at": {"type": "string"},
                    "updated_at": {"type": "string"}
                }},
                "Token": {"type": "object", "required": ["access_token", "expires_in", "refresh_token", "scope", "token_type"], "properties": {
                    "access_token": {"type": "string"},
                    "expires_in": {"type": "integer"},
                    "refresh_token": {"type": "string"},
                    "scope": {"type": "string"},
                    "token_type": {"type": "string", "enum": ["Bearer"]}
                }},
                "Error": {"type": "object", "required": ["code", "message", "errors"], "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "string"}}
                }},
                "OAuthError": {"type": "object", "required": ["error", "error_description"], "properties": {
                    "error": {"type": "string", "enum": ["invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type", "invalid_scope", "slow_down"]},
                    "error_description": {"type": "string"}
                }}
            }
        }
    })
}
