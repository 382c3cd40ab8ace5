//! The Eachlabs and 1min.ai routes of the OpenAPI document: their request and answer
//! shapes as Parallax serves them (the fields and their sources are in
//! `e2e/contracts/eachlabs.json` and `e2e/contracts/onemin.json`).

use serde_json::{Map, Value, json};

use super::{errors, json_ok};

const EACHLABS_MODELS: [&str; 2] = ["flux-depth-dev", "flux-depth-pro"];
const ONEMIN_MODEL: &str = "black-forest-labs/flux-depth-pro";

fn responses(ok: Value, codes: &[u16]) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("200".into(), ok);
    r.extend(errors(codes));
    r
}

fn image_content() -> Value {
    json!({
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/webp": {"schema": {"type": "string", "format": "binary"}}
    })
}

/// Adds `/v1/prediction`, `/v1/prediction/{id}`, `/api/features`, `/api/assets` and
/// `/api/assets/{file}` with their schemas.
pub fn add(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    schemas.insert(
        "EachlabsCreate".into(),
        json!({"type": "object", "required": ["model", "input"], "additionalProperties": false,
               "properties": {
                   "model": {"type": "string", "enum": EACHLABS_MODELS},
                   "version": {"type": "string", "enum": ["0.0.1"]},
                   "input": {"type": "object", "description": "The model's parameters, named as in POST /v2/{model} (FluxDepthDevInput / FluxDepthProInput); a missing output_format is webp"},
                   "webhook_url": {"type": "string", "description": "https on a public host: the finished prediction is POSTed there, signed"},
                   "webhook_secret": {"type": "string", "description": "Signs the webhook deliveries (default: the SHA-256 of your API key)"}}}),
    );
    schemas.insert(
        "EachlabsCreated".into(),
        json!({"type": "object", "required": ["status", "message", "predictionID"],
               "properties": {"status": {"type": "string", "enum": ["success"]},
                              "message": {"type": "string"},
                              "predictionID": {"type": "string", "format": "uuid"}}}),
    );
    schemas.insert(
        "EachlabsPrediction".into(),
        json!({"type": "object", "required": ["id", "model", "version", "input", "status", "output", "logs", "metrics", "urls"],
               "properties": {
                   "id": {"type": "string", "format": "uuid"},
                   "model": {"type": "string", "enum": EACHLABS_MODELS},
                   "version": {"type": "string"},
                   "input": {"type": "object"},
                   "status": {"type": "string", "enum": ["starting", "processing", "success", "failed", "cancelled"]},
                   "output": {"description": "On success the image's URL (an array of URLs when num_outputs > 1), else null",
                              "anyOf": [{"type": "string", "format": "uri"},
                                        {"type": "array", "items": {"type": "string", "format": "uri"}},
                                        {"type": "null"}]},
                   "logs": {"type": ["string", "null"], "description": "A failure's reason"},
                   "metrics": {"type": "object", "required": ["predict_time", "credits"], "properties": {
                       "predict_time": {"type": "number", "minimum": 0},
                       "credits": {"type": "integer", "minimum": 0}}},
                   "urls": {"type": "object", "required": ["get"], "properties": {"get": {"type": "string", "format": "uri"}}}}}),
    );
    let idempotency = json!({"name": "Idempotency-Key", "in": "header", "required": false,
                             "schema": {"type": "string", "minLength": 1, "maxLength": 255}});
    let create = json!({"post": {
        "operationId": "eachlabs_create_prediction",
        "summary": "Eachlabs: create a prediction (flux-depth-dev or flux-depth-pro)",
        "parameters": [idempotency.clone()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EachlabsCreate"}}}},
        "responses": responses(json_ok("Created; poll GET /v1/prediction/{id}", "EachlabsCreated"),
                               &[400, 401, 406, 409, 413, 422, 429, 500])}});
    paths.insert("/v1/prediction".into(), create);
    paths.insert(
        "/v1/prediction/{prediction_id}".into(),
        json!({"get": {
            "operationId": "eachlabs_get_prediction",
            "summary": "Eachlabs: a prediction, in every state (200), or 404",
            "parameters": [{"name": "prediction_id", "in": "path", "required": true,
                            "schema": {"type": "string", "format": "uuid"}}],
            "responses": responses(json_ok("The prediction", "EachlabsPrediction"), &[401, 404, 429, 500])}}),
    );

    schemas.insert(
        "OneMinFeature".into(),
        json!({"type": "object", "required": ["type", "model", "promptObject"],
               "properties": {
                   "type": {"type": "string", "enum": ["IMAGE_EDITOR"]},
                   "model": {"type": "string", "enum": [ONEMIN_MODEL]},
                   "promptObject": {"type": "object", "required": ["imageUrl", "prompt"], "properties": {
                       "imageUrl": {"type": "string", "minLength": 1, "description": "An https URL, a data URL, an uploaded asset's fileContent.path or an earlier result's path"},
                       "prompt": {"type": "string", "minLength": 1},
                       "seed": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                       "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 28},
                       "prompt_upsampling": {"type": "boolean", "default": false},
                       "guidance": {"type": "number", "minimum": 1, "maximum": 20, "default": 3.5},
                       "safety_tolerance": {"type": "integer", "minimum": 1, "maximum": 6, "default": 2},
                       "format": {"type": "string", "enum": ["jpg", "png", "webp"], "default": "jpg"}}}}}),
    );
    schemas.insert(
        "OneMinRecord".into(),
        json!({"type": "object", "required": ["aiRecord"], "properties": {"aiRecord": {
            "type": "object",
            "required": ["uuid", "userId", "teamId", "model", "type", "status", "createdAt", "aiRecordDetail", "temporaryUrl"],
            "properties": {
                "uuid": {"type": "string", "format": "uuid"},
                "userId": {"type": "string"}, "teamId": {"type": "string"},
                "model": {"type": "string"}, "type": {"type": "string"},
                "status": {"type": "string", "enum": ["SUCCESS"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "aiRecordDetail": {"type": "object", "required": ["promptObject", "resultObject", "responseObject"], "properties": {
                    "promptObject": {"type": "object"},
                    "resultObject": {"type": "array", "items": {"type": "string"}, "description": "Paths of the images (results/<id>/0.jpg)"},
                    "responseObject": {"type": "object"}}},
                "temporaryUrl": {"type": "string", "format": "uri"}}}}}),
    );
    schemas.insert(
        "OneMinAsset".into(),
        json!({"type": "object", "required": ["asset", "fileContent"], "properties": {
            "asset": {"type": "object", "required": ["key", "location", "mimeType", "size"], "properties": {
                "key": {"type": "string"}, "location": {"type": "string", "format": "uri"},
                "mimeType": {"type": "string"}, "size": {"type": "integer"}}},
            "fileContent": {"type": "object", "required": ["path", "url"], "properties": {
                "path": {"type": "string"}, "url": {"type": "string", "format": "uri"}}}}}),
    );
    // 1min.ai's own key header; x-api-key and Bearer work too.
    let onemin_security = json!([{"OneMinKey": []}, {"ApiKey": []}, {}]);
    paths.insert(
        "/api/features".into(),
        json!({"post": {
            "operationId": "onemin_run_feature",
            "summary": "1min.ai: edit an image with flux-depth-pro (waits for the result)",
            "security": onemin_security,
            "parameters": [idempotency],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OneMinFeature"}}}},
            "responses": responses(json_ok("The finished record", "OneMinRecord"),
                                   &[400, 401, 406, 409, 413, 422, 429, 500, 502, 504])}}),
    );
    paths.insert(
        "/api/assets".into(),
        json!({"post": {
            "operationId": "onemin_upload_asset",
            "summary": "1min.ai: upload an image (the `asset` part) for promptObject.imageUrl",
            "security": onemin_security,
            "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["asset"],
                "properties": {"asset": {"type": "string", "format": "binary"}}}}}},
            "responses": responses(json_ok("Stored", "OneMinAsset"), &[400, 401, 413, 429, 500])}}),
    );
    let mut asset = Map::new();
    asset.insert(
        "200".into(),
        json!({"description": "The image", "content": image_content()}),
    );
    asset.insert(
        "304".into(),
        json!({"description": "Not modified (If-None-Match)"}),
    );
    asset.extend(errors(&[404, 500]));
    paths.insert(
        "/api/assets/{file}".into(),
        json!({"get": {
            "operationId": "onemin_get_asset",
            "summary": "1min.ai: an uploaded image",
            "security": [],
            "parameters": [{"name": "file", "in": "path", "required": true,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}\\.(jpg|png|webp)$"}}],
            "responses": asset}}),
    );
}
