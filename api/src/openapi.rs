//! The OpenAPI 3.1 document, generated from the catalog and the wire types' shapes, so
//! the documented parameters, ranges and defaults are the validated ones.

mod compat;

use serde_json::{Map, Value, json};

use crate::models::{Model, ParamKind, ParamSpec};
use crate::params::default_value;

fn param_schema(spec: &ParamSpec, multipart: bool) -> Value {
    let mut schema = match spec.kind {
        ParamKind::Prompt { max_chars } => {
            json!({"type": "string", "minLength": 1, "maxLength": max_chars})
        }
        ParamKind::Image if multipart => json!({"type": "string", "format": "binary"}),
        ParamKind::Image => json!({
            "type": "string",
            "minLength": 1,
            "description": "An https URL, a data URL (data:image/png;base64,…) or raw base64 of a JPEG, PNG or WebP image."
        }),
        ParamKind::Seed => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        ParamKind::Integer { min, max, .. } => {
            json!({"type": "integer", "minimum": min, "maximum": max})
        }
        ParamKind::Number { min, max, .. } => {
            json!({"type": "number", "minimum": min, "maximum": max})
        }
        ParamKind::Boolean { .. } => json!({"type": "boolean"}),
        ParamKind::Choice { options, .. } => json!({"type": "string", "enum": options}),
    };
    if multipart && !matches!(spec.kind, ParamKind::Image | ParamKind::Prompt { .. }) {
        // Form values arrive as strings ("7", "False") and are parsed as the type above.
        schema = json!({"anyOf": [schema, {"type": "string"}]});
    }
    let obj = schema.as_object_mut().expect("schemas are objects");
    let description = match obj.get("description").and_then(Value::as_str) {
        Some(extra) => format!("{} {extra}", spec.help),
        None => spec.help.to_owned(),
    };
    obj.insert("description".into(), Value::from(description));
    if let Some(default) = default_value(spec) {
        obj.insert("default".into(), default);
    }
    schema
}

fn input_schema(model: Model, multipart: bool) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for spec in model.params() {
        properties.insert(spec.name.into(), param_schema(spec, multipart));
        if spec.required {
            required.push(spec.name);
        }
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

fn errors(codes: &[u16]) -> Map<String, Value> {
    codes
        .iter()
        .map(|code| {
            let text = match code {
                400 => "Invalid input; `fields` names each problem",
                401 => "Missing or invalid API key",
                403 => "The request belongs to another API key",
                404 => "Unknown model, route or request (or expired)",
                405 => "Method not allowed (see the Allow header)",
                406 => "Not enough credits",
                409 => "Conflict: the request already finished, or its first try is still starting",
                413 => "Request body too large",
                422 => "The job FAILED",
                429 => "Rate limited (see the Retry-After header)",
                500 => "Internal error",
                502 => "The upstream provider failed",
                504 => "The upstream provider timed out",
                _ => "Error",
            };
            let mut resp = error_response(text);
            if *code == 429 {
                resp["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}});
            }
            (code.to_string(), resp)
        })
        .collect()
}

fn credits_header() -> Value {
    json!({"x-remaining-credits": {"schema": {"type": "integer"}, "description": "Credits left on the calling account"}})
}

fn json_ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "headers": credits_header(),
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn request_id_param() -> Value {
    json!({"name": "request_id", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}})
}

fn body_for(model: Model) -> Value {
    let name = schema_name(model);
    json!({
        "required": true,
        "content": {
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{name}Input")}},
            "multipart/form-data": {"schema": {"$ref": format!("#/components/schemas/{name}Form")}}
        }
    })
}

fn schema_name(model: Model) -> &'static str {
    match model {
        Model::FluxDepthPro => "FluxDepthPro",
        Model::FluxDepthDev => "FluxDepthDev",
        Model::DepthAnythingV2 => "DepthAnythingV2",
    }
}

/// The whole document, with `origin` as the server URL.
pub fn document(origin: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for model in Model::ALL {
        let name = schema_name(model);
        schemas.insert(format!("{name}Input"), input_schema(model, false));
        schemas.insert(format!("{name}Form"), input_schema(model, true));

        let mut submit = Map::new();
        submit.insert(
            "200".into(),
            json_ok("Accepted; poll status_url", "SubmitResponse"),
        );
        submit.extend(errors(&[400, 401, 404, 406, 413, 429, 500]));
        paths.insert(
            format!("/v2/{}", model.slug()),
            json!({"post": {
                "operationId": format!("submit_{}", model.slug().replace('-', "_")),
                "summary": format!("Submit a {} job (async)", model.title()),
                "description": model.summary(),
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                                "description": "Retrying with the same key returns the same request_id and charges once."}],
                "requestBody": body_for(model),
                "responses": submit
            }}),
        );

        let mut sync = Map::new();
        sync.insert(
            "200".into(),
            json!({
                "description": "The first generated image (or, with Accept: application/json, the result)",
                "headers": credits_header(),
                "content": {
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/webp": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobResult"}}
                }
            }),
        );
        sync.extend(errors(&[400, 401, 404, 406, 413, 422, 429, 500, 502, 504]));
        paths.insert(
            format!("/v1/{}", model.slug()),
            json!({"post": {
                "operationId": format!("run_{}", model.slug().replace('-', "_")),
                "summary": format!("Run a {} job and wait for the image (sync)", model.title()),
                "requestBody": body_for(model),
                "responses": sync
            }}),
        );
    }

    let mut status = Map::new();
    status.insert(
        "200".into(),
        json_ok("QUEUED, PROCESSING or COMPLETED", "StatusResponse"),
    );
    status.insert(
        "422".into(),
        json_ok("FAILED, with error", "StatusResponse"),
    );
    status.extend(errors(&[400, 401, 404, 429, 500]));
    paths.insert(
        "/v2/requests/{request_id}/status".into(),
        json!({"get": {"operationId": "get_status", "summary": "A job's status",
                       "description": "With `wait`, the answer is held until the status is no longer `seen` (or, without `seen`, the status when the request arrived), the job finishes, or `wait` seconds pass; then it is the same answer as without `wait`. A finished job answers at once.",
                       "parameters": [
                           request_id_param(),
                           {"name": "wait", "in": "query", "required": false,
                            "schema": {"type": "integer", "minimum": 1, "maximum": crate::wait::MAX_WAIT_SECS},
                            "description": "Hold the answer up to this many seconds until the status changes"},
                           {"name": "seen", "in": "query", "required": false,
                            "schema": {"type": "string", "pattern": "^(QUEUED|PROCESSING|COMPLETED|FAILED)(,(QUEUED|PROCESSING|COMPLETED|FAILED))*$"},
                            "description": "The status last seen, or a comma-separated list of statuses: a status not among them answers at once (`QUEUED,PROCESSING`: only the end)"}],
                       "responses": status}}),
    );

    let mut events = Map::new();
    events.insert(
        "200".into(),
        json!({"description": "Server-sent events: `status` (a StatusResponse as `data`, the status as its `id`) at once and at each change, the last COMPLETED or FAILED, then the stream ends; `error` (an ErrorBody) ends it early",
               "content": {"text/event-stream": {"schema": {"type": "object", "required": ["event", "data"], "properties": {
                   "id": {"type": "string", "enum": ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]},
                   "event": {"type": "string", "enum": ["status", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json",
                            "description": "A StatusResponse (`status`) or an ErrorBody (`error`), as JSON"}}}}}}),
    );
    events.insert(
        "204".into(),
        json!({"description": "The job has finished and `Last-Event-ID` says the client saw its end (an EventSource reconnecting after the stream ended): nothing more will come"}),
    );
    events.extend(errors(&[401, 404, 429, 500]));
    paths.insert(
        "/v2/requests/{request_id}/events".into(),
        json!({"get": {"operationId": "get_status_events", "summary": "A job's status changes, as server-sent events",
                       "parameters": [request_id_param(),
                           {"name": "Last-Event-ID", "in": "header", "required": false,
                            "schema": {"type": "string"},
                            "description": "The last event's id, sent back by an EventSource when it reconnects"}],
                       "responses": events}}),
    );

    let mut result = Map::new();
    result.insert(
        "200".into(),
        json_ok(
            "The job; once COMPLETED `output` is the image URL and `images` lists every image",
            "JobResult",
        ),
    );
    result.insert(
        "422".into(),
        json_ok("The FAILED job, with error", "JobResult"),
    );
    result.extend(errors(&[401, 404, 429, 500]));
    let mut delete = Map::new();
    delete.insert(
        "200".into(),
        json!({"description": "Canceled (a running job, refunded) or deleted (a finished job and its images)",
               "headers": credits_header(),
               "content": {"application/json": {"schema": {"type": "object"}}}}),
    );
    delete.extend(errors(&[401, 403, 404, 429, 500]));
    paths.insert(
        "/v2/requests/{request_id}".into(),
        json!({
            "get": {"operationId": "get_result", "summary": "A job's result",
                    "parameters": [request_id_param()], "responses": result},
            "delete": {"operationId": "delete_request", "summary": "Cancel a running job or delete a finished one",
                       "parameters": [request_id_param()], "responses": delete}
        }),
    );

    let mut list = Map::new();
    list.insert(
        "200".into(),
        json!({"description": "The calling key's requests, newest first", "headers": credits_header(),
               "content": {"application/json": {"schema": {"type": "object", "required": ["requests", "next_cursor"],
                   "properties": {"requests": {"type": "array", "items": {"$ref": "#/components/schemas/JobResult"}},
                                  "next_cursor": {"type": ["string", "null"]}}}}}}),
    );
    list.extend(errors(&[400, 401, 429, 500]));
    paths.insert(
        "/v2/requests".into(),
        json!({"get": {"operationId": "list_requests", "summary": "List your requests (API keys only)",
                       "parameters": [
                           {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                           {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "next_cursor of the previous page"}],
                       "responses": list}}),
    );
    let mut credits = Map::new();
    credits.insert(
        "200".into(),
        json!({"description": "The calling key's balance and credit history, newest first: each job (charged, refunded, pending, why it ended; deleted ones too, for the retention period) and each grant",
               "headers": credits_header(),
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreditsPage"}}}}),
    );
    credits.extend(errors(&[400, 401, 429, 500]));
    paths.insert(
        "/v2/credits".into(),
        json!({"get": {"operationId": "get_credits", "summary": "Your balance and where your credits went (API keys only; without a key, x-remaining-credits on the 401 tells today's allowance)",
                       "parameters": [
                           {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                           {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "next_cursor of the previous page"}],
                       "responses": credits}}),
    );
    paths.insert(
        "/r/{request_id}".into(),
        json!({"get": {"operationId": "share_page", "summary": "A result's share page (HTML with Open Graph tags)", "security": [],
                       "parameters": [request_id_param()],
                       "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                                     "404": {"description": "Unknown or expired", "content": {"text/html": {"schema": {"type": "string"}}}}}}}),
    );

    let mut output = Map::new();
    output.insert(
        "200".into(),
        json!({"description": "The image", "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}}}}),
    );
    output.insert(
        "304".into(),
        json!({"description": "Not modified (If-None-Match)"}),
    );
    output.extend(errors(&[404, 500]));
    paths.insert(
        "/results/{request_id}/{file}".into(),
        json!({"get": {"operationId": "get_output", "summary": "An output image, kept for the retention period",
                       "security": [],
                       "parameters": [request_id_param(),
                           {"name": "file", "in": "path", "required": true,
                            "schema": {"type": "string", "pattern": "^([0-3]\\.(jpg|png|webp)|control)$"}}],
                       "responses": output}}),
    );
    let mut cancel = Map::new();
    cancel.insert(
        "200".into(),
        json_ok(
            "Canceled: the job's status, FAILED, with what was refunded in metrics.credits",
            "StatusResponse",
        ),
    );
    cancel.extend(errors(&[401, 403, 404, 409, 429, 500]));
    paths.insert(
        "/v2/requests/{request_id}/cancel".into(),
        json!({"post": {"operationId": "cancel_request", "summary": "Stop a QUEUED or PROCESSING job (its owner only); a finished one is 409",
                        "parameters": [request_id_param()], "responses": cancel}}),
    );
    let mut share = Map::new();
    share.insert(
        "200".into(),
        json!({"description": "The choice as stored", "content": {"application/json": {"schema": {
            "type": "object", "required": ["request_id", "share_control"],
            "properties": {"request_id": {"type": "string"}, "share_control": {"type": "string", "enum": ["none", "photo", "depth"]}}}}}}),
    );
    share.extend(errors(&[400, 401, 403, 404, 429, 500]));
    paths.insert(
        "/v2/requests/{request_id}/share".into(),
        json!({"post": {"operationId": "share_request",
                        "summary": "What the job's share page shows beside the result: none (the default), the control photo, or the depth map the job was made from instead of the photo (its owner only; on a depth-anything-v2 preview a 400 naming share_control: a preview has no share page, its map is shared through the job made from it)",
                        "parameters": [request_id_param()],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["share_control"], "additionalProperties": false,
                            "properties": {"share_control": {"type": "string", "enum": ["none", "photo", "depth"]}}}}}},
                        "responses": share}}),
    );
    compat::add(&mut paths, &mut schemas);

    paths.insert(
        "/healthz".into(),
        json!({"get": {"operationId": "get_health", "summary": "Liveness and configured providers", "security": [],
                       "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"operationId": "get_openapi", "summary": "This document", "security": [],
                       "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );

    schemas.extend(wire_schemas());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Parallax API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Depth-aware image generation with FLUX.1 Depth, compatible with Segmind's v1 (sync) and v2 (async) APIs. Authenticate with the x-api-key header. depth-anything-v2 is the depth preview: control_image in, one greyscale PNG depth map out (near = bright), as a job like the others; a keyed account's second preview of the same image bytes answers its first job's request_id. control_type depth on the FLUX models sends a depth map of your own (e.g. a preview) as the control image."
        },
        "servers": [{"url": origin}],
        "security": [{"ApiKey": []}, {}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "OneMinKey": {"type": "apiKey", "in": "header", "name": "API-KEY"}
            },
            "schemas": schemas
        }
    })
}

fn wire_schemas() -> Map<String, Value> {
    let id = json!({"type": "string", "format": "uuid"});
    let status = json!({"type": "string", "enum": ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]});
    let codes: Vec<Value> = crate::error::ErrorCode::ALL
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let seconds = json!({"type": "number", "minimum": 0});
    let mut m = Map::new();
    m.insert("ErrorCode".into(), json!({"type": "string", "enum": codes}));
    m.insert(
        "ErrorBody".into(),
        json!({"type": "object", "required": ["error", "code"],
               "properties": {
                   "error": {"type": "string"},
                   "code": {"$ref": "#/components/schemas/ErrorCode"},
                   "fields": {"type": "array", "items": {"type": "object", "required": ["field", "message"],
                              "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}
               }}),
    );
    m.insert(
        "SubmitResponse".into(),
        json!({"type": "object", "required": ["request_id", "status", "poll_url", "status_url", "response_url"],
               "properties": {"request_id": id, "status": status,
                   "poll_url": {"type": "string", "format": "uri"},
                   "status_url": {"type": "string", "format": "uri"},
                   "response_url": {"type": "string", "format": "uri"}}}),
    );
    let count = json!({"type": "integer", "minimum": 0});
    m.insert(
        "Credits".into(),
        json!({"type": "object", "required": ["charged", "refunded"],
               "properties": {"charged": count, "refunded": count,
                   "refund_on_cancel": {"type": "integer", "minimum": 0, "description": "While the job runs: what a cancel sent now would refund"},
                   "refund_pending": {"type": "integer", "minimum": 0, "description": "While a decision is under way (an upstream cancel or submit whose answer decides the refund): what may still come back on top of refunded"}}}),
    );
    m.insert(
        "Metrics".into(),
        json!({"type": "object", "properties": {
            "queue_time": seconds, "inference_time": seconds, "total_time": seconds,
            "provider": {"type": "string"},
            "model": {"type": "string", "description": "The model that made the images, when an operator fallback served another"},
            "credits": {"$ref": "#/components/schemas/Credits"},
            "cost": {"type": "integer", "minimum": 0, "description": "Once COMPLETED: the credits the job cost (charged less refunded); Segmind's metrics.cost"}}}),
    );
    let when = json!({"type": "integer", "description": "Unix seconds"});
    m.insert(
        "CreditEntry".into(),
        json!({"oneOf": [
            {"type": "object", "required": ["kind", "request_id", "model", "charged", "refunded", "pending", "created_at", "settled_at", "reason", "deleted"],
             "properties": {"kind": {"const": "job"}, "request_id": id,
                 "model": {"type": ["string", "null"], "enum": Model::ALL.iter().map(|m| Value::from(m.slug())).chain([Value::Null]).collect::<Vec<_>>()},
                 "charged": count, "refunded": count,
                 "pending": {"type": "integer", "minimum": 0, "description": "What may still be refunded: the whole charge until the job's end is recorded, then 0"},
                 "created_at": when, "settled_at": {"type": ["integer", "null"]},
                 "reason": {"type": ["string", "null"], "enum": ["completed", "short_of_outputs", "failed", "canceled", "not_started", null]},
                 "deleted": {"type": "boolean"}}},
            {"type": "object", "required": ["kind", "grant_id", "credits", "created_at"],
             "properties": {"kind": {"const": "grant"}, "grant_id": {"type": "string"}, "credits": count,
                 "created_at": {"type": ["integer", "null"]}}}]}),
    );
    m.insert(
        "CreditsPage".into(),
        json!({"type": "object", "required": ["balance", "entries", "next_cursor"],
               "properties": {"balance": count,
                   "entries": {"type": "array", "items": {"$ref": "#/components/schemas/CreditEntry"}},
                   "next_cursor": {"type": ["string", "null"]}}}),
    );
    m.insert(
        "StatusResponse".into(),
        json!({"type": "object", "required": ["request_id", "status", "status_url", "response_url", "metrics"],
               "properties": {"request_id": id, "status": status,
                   "status_url": {"type": "string", "format": "uri"},
                   "response_url": {"type": "string", "format": "uri"},
                   "error": {"type": "string"}, "code": {"$ref": "#/components/schemas/ErrorCode"},
                   "metrics": {"$ref": "#/components/schemas/Metrics"}}}),
    );
    m.insert(
        "OutputImage".into(),
        json!({"type": "object", "required": ["url", "content_type", "file_name", "file_size"],
               "properties": {
                   "url": {"type": "string", "format": "uri"},
                   "content_type": {"type": "string", "enum": ["image/jpeg", "image/png", "image/webp"]},
                   "file_name": {"type": "string"},
                   "file_size": {"type": "integer", "minimum": 1, "description": "Bytes; exactly what url serves"}}}),
    );
    m.insert(
        "JobResult".into(),
        json!({"type": "object",
               "required": ["request_id", "model", "status", "output", "images", "seed", "params", "error", "metrics", "created_at", "expires_at"],
               "properties": {"request_id": id,
                   "model": {"type": "string", "enum": Model::ALL.iter().map(|m| m.slug()).collect::<Vec<_>>()},
                   "status": status,
                   "output": {"type": ["string", "null"], "format": "uri",
                              "description": "As Segmind: the first image's URL once COMPLETED (every image is in `images`), else null"},
                   "images": {"type": "array", "items": {"$ref": "#/components/schemas/OutputImage"}, "maxItems": 4},
                   "seed": {"type": ["integer", "null"]},
                   "params": {"type": "object"},
                   "error": {"type": ["string", "null"]},
                   "code": {"$ref": "#/components/schemas/ErrorCode"},
                   "metrics": {"$ref": "#/components/schemas/Metrics"},
                   "created_at": {"type": "integer"},
                   "expires_at": {"type": ["integer", "null"]},
                   "control_image": {"type": "string", "format": "uri",
                       "description": "A short-lived signed link to the control image; only in its owner's reads, or anyone's when the owner chose share_control photo"},
                   "share_control": {"type": "string", "enum": ["none", "photo", "depth"], "default": "none",
                       "description": "What the share page shows beside the result; absent: none"},
                   "depth_image": {"type": "string", "format": "uri",
                       "description": "A generation job's depth map (greyscale PNG, near = bright): with control_type depth a short-lived signed link to the control image itself; with control_type image the output of the same account's earlier depth preview of the same bytes. Only in its owner's reads, or anyone's when the owner chose share_control depth or photo; absent when none is known"}}}),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_parameter_is_documented_with_its_range_and_default() {
        let doc = document("http://127.0.0.1:8787");
        assert_eq!(doc["openapi"], "3.1.0");
        for model in Model::ALL {
            let name = schema_name(model);
            let props = &doc["components"]["schemas"][format!("{name}Input")]["properties"];
            for spec in model.params() {
                assert!(
                    props[spec.name].is_object(),
                    "{} {}",
                    model.slug(),
                    spec.name
                );
            }
            assert!(doc["paths"][format!("/v2/{}", model.slug())]["post"].is_object());
            assert!(doc["paths"][format!("/v1/{}", model.slug())]["post"].is_object());
        }
        let steps = &doc["components"]["schemas"]["FluxDepthProInput"]["properties"]["steps"];
        assert_eq!(steps["minimum"], 15);
        assert_eq!(steps["maximum"], 50);
        assert_eq!(steps["default"], 40);
        let form_steps =
            &doc["components"]["schemas"]["FluxDepthDevForm"]["properties"]["num_outputs"];
        assert!(form_steps["anyOf"].is_array(), "form values may be strings");
    }

    #[test]
    fn the_preview_takes_only_an_image_and_the_generators_a_control_type() {
        let doc = document("");
        let preview = &doc["components"]["schemas"]["DepthAnythingV2Input"];
        assert_eq!(preview["required"], json!(["control_image"]));
        assert_eq!(preview["additionalProperties"], false);
        assert_eq!(preview["properties"].as_object().unwrap().len(), 1);
        assert!(doc["paths"]["/v2/depth-anything-v2"]["post"].is_object());
        for name in ["FluxDepthProInput", "FluxDepthDevInput"] {
            let ct = &doc["components"]["schemas"][name]["properties"]["control_type"];
            assert_eq!(ct["enum"], json!(["image", "depth"]), "{name}");
            assert_eq!(ct["default"], "image");
        }
        let share = &doc["paths"]["/v2/requests/{request_id}/share"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["properties"]["share_control"];
        assert_eq!(share["enum"], json!(["none", "photo", "depth"]));
        assert!(doc["components"]["schemas"]["JobResult"]["properties"]["depth_image"].is_object());
    }

    #[test]
    fn every_error_code_is_in_the_schema() {
        let doc = document("");
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(codes, crate::error::ErrorCode::ALL.len());
    }
}
