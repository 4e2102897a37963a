//! Generates the OpenAPI 3.1 document served at `/api/openapi.json`: one
//! operation per `google.api.http` binding, schemas from the messages and
//! their `swrm.api.rules` (the same declarations the generated checks
//! enforce), descriptions from the proto comments, and every error status
//! on every operation.
//!
//! The contract's JSON choices show in the schemas: in an answer every field
//! is present (`required` lists them all) and `optional` scalars and
//! messages may be `null`; in a request only rule-required fields are
//! required and any other field may be `null` (null means absent); 64-bit
//! integers are numbers; `google.protobuf.Struct` is a free-form object,
//! `ListValue` a free-form array.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

use crate::{
    checks::snake,
    model::{Access, Api, Field, Label, Method, Rules, Service, Type},
};

/// Characters `char::is_control` rejects (the checks' rule).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// Characters `char::is_whitespace` accepts (the checks' not-blank rule).
const SPACE: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const UUID: &str = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
/// Unix milliseconds a device `ts` may carry (years 0 to 9999).
const MAX_TS_MILLIS: i64 = 253_402_300_799_999;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

pub fn generate(api: &Api, version: &str) -> String {
    let (requests, responses) = directions(api);
    let both: BTreeSet<String> = requests.intersection(&responses).cloned().collect();
    let name_of = |full: &str, dir: Dir| -> String {
        let short = full.trim_start_matches("swrm.v1.");
        if dir == Dir::Request && both.contains(full) {
            format!("{short}Input")
        } else {
            short.to_owned()
        }
    };
    // Fields a path variable binds are not part of the body.
    let path_bound = api.path_bound();
    let ctx = Ctx {
        name_of: &name_of,
        path_bound: &path_bound,
    };

    let mut schemas = Map::new();
    for (set, dir) in [(&requests, Dir::Request), (&responses, Dir::Response)] {
        for full in set {
            let message = api.message(full);
            schemas.insert(name_of(full, dir), ctx.message_schema(message, dir));
        }
    }
    schemas.insert("Error".into(), error_schema());

    let mut paths = Map::new();
    for (service, method) in api.methods() {
        let Some(http) = &method.http else { continue };
        let item = paths
            .entry(http.path.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        item.insert(http.verb.clone(), ctx.operation(api, service, method));
    }
    for (path, op) in system_operations() {
        paths.insert(path.into(), op);
    }

    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "swrm",
            "version": version,
            "description": "The REST face of the swrm device and admin APIs, generated from \
                proto/ (the same messages as the gRPC services). JSON is the proto3 JSON mapping with \
                snake_case names: every answer field is present (absent is null, empty is []), \
                integers are numbers, unknown request fields are ignored and null means absent. \
                Errors use one envelope: {\"error\": {\"code\", \"message\"}}, code being the gRPC \
                status name in snake_case."
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "device", "description": "Device routes (swrm.v1.DeviceService): a device key, except pair, enroll and sensor-types."},
            {"name": "admin", "description": "Admin routes (swrm.v1.AdminService): an organization API key."},
            {"name": "system", "description": "Probes."}
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "swrm_dk_… (device key), swrm_ak_… (organization API key), swrm_pt_… (pair) or swrm_ec_… (enroll)."}
            },
            "schemas": schemas,
            "responses": error_responses(),
            "headers": {
                "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}},
                "RateLimit": {"description": "IETF RateLimit: the bucket that ran out, `r=0` requests left, `t` seconds until one is allowed, e.g. `\"device\";r=0;t=3`.", "schema": {"type": "string"}},
                "RateLimitPolicy": {"description": "IETF RateLimit-Policy: the bucket's quota `q` per window of `w` seconds (the burst and its refill time), e.g. `\"device\";q=100;w=5`.", "schema": {"type": "string"}},
                "WWWAuthenticate": {"description": "Always `Bearer`.", "schema": {"type": "string"}},
                "ETag": {"description": "Opaque version of the answer; send it back as If-None-Match.", "schema": {"type": "string"}}
            }
        }
    });
    serde_json::to_string_pretty(&doc).expect("the document serializes")
}

/// Message names reachable from REST requests and from REST answers.
fn directions(api: &Api) -> (BTreeSet<String>, BTreeSet<String>) {
    let routed = || api.methods().filter(|(_, m)| m.http.is_some());
    let request_roots = routed()
        .filter(|(_, m)| !m.client_streaming)
        .map(|(_, m)| m.input.clone())
        .chain(routed().filter_map(|(_, m)| body_item_type(api, m)));
    let requests = api
        .reachable(request_roots)
        .into_iter()
        .map(|m| m.full_name.clone())
        .collect();
    let responses = api
        .reachable(routed().map(|(_, m)| m.output.clone()))
        .into_iter()
        .map(|m| m.full_name.clone())
        .collect();
    (requests, responses)
}

/// The element type of `body_may_be_item_of`, if the route has one.
fn body_item_type(api: &Api, method: &Method) -> Option<String> {
    let name = &method.route.body_may_be_item_of;
    if name.is_empty() {
        return None;
    }
    let field = api
        .message(&method.input)
        .fields
        .iter()
        .find(|f| &f.name == name)
        .expect("body_may_be_item_of names a field");
    match &field.ty {
        Type::Message(m) => Some(m.clone()),
        _ => panic!("body_may_be_item_of must name a repeated message field"),
    }
}

struct Ctx<'a> {
    name_of: &'a dyn Fn(&str, Dir) -> String,
    path_bound: &'a BTreeSet<(String, String)>,
}

impl Ctx<'_> {
    fn reference(&self, full: &str, dir: Dir) -> Value {
        json!({"$ref": format!("#/components/schemas/{}", (self.name_of)(full, dir))})
    }

    fn message_schema(&self, message: &crate::model::Message, dir: Dir) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in &message.fields {
            if f.ty == Type::Message("google.protobuf.FieldMask".into()) {
                // REST derives update masks from the body's keys.
                continue;
            }
            if dir == Dir::Request
                && self
                    .path_bound
                    .contains(&(message.full_name.clone(), f.name.clone()))
            {
                continue;
            }
            properties.insert(f.name.clone(), self.field_schema(f, dir));
            if dir == Dir::Response || f.rules.required {
                required.push(f.name.clone());
            }
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        describe(&mut schema, &message.comment);
        schema
    }

    fn field_schema(&self, f: &Field, dir: Dir) -> Value {
        let mut schema = match &f.label {
            Label::Single | Label::Optional => self.element(&f.ty, &f.rules, dir),
            Label::Repeated => {
                let item_rules = f.rules.items.as_deref().cloned().unwrap_or_default();
                let mut s =
                    json!({"type": "array", "items": self.element(&f.ty, &item_rules, dir)});
                if dir == Dir::Request {
                    let min = if f.rules.required {
                        f.rules.min_items.max(1)
                    } else {
                        f.rules.min_items
                    };
                    if min > 0 {
                        s["minItems"] = json!(min);
                    }
                    if f.rules.max_items > 0 {
                        s["maxItems"] = json!(f.rules.max_items);
                    }
                }
                s
            }
            Label::Map(value) => {
                let values = if f.rules.scalar_values {
                    json!({"type": ["number", "string", "boolean"]})
                } else {
                    self.element(value, &Rules::default(), dir)
                };
                let mut s = json!({"type": "object", "additionalProperties": values});
                if dir == Dir::Request {
                    let key_rules = f.rules.items.as_deref().cloned().unwrap_or_default();
                    s["propertyNames"] = string_schema(&key_rules, dir);
                    if f.rules.max_items > 0 {
                        s["maxProperties"] = json!(f.rules.max_items);
                    }
                    if f.rules.required {
                        s["minProperties"] = json!(f.rules.min_items.max(1));
                    }
                }
                s
            }
        };
        let nullable = match dir {
            Dir::Request => !f.rules.required,
            Dir::Response => {
                f.label == Label::Optional
                    || (f.label == Label::Single && matches!(f.ty, Type::Message(_)))
            }
        };
        if nullable {
            schema = or_null(schema);
        }
        describe(&mut schema, &f.comment);
        schema
    }

    fn element(&self, ty: &Type, rules: &Rules, dir: Dir) -> Value {
        match ty {
            Type::String if rules.device_ts && dir == Dir::Request => json!({
                "anyOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "integer", "minimum": 0, "maximum": MAX_TS_MILLIS, "description": "Unix milliseconds"}
                ]
            }),
            Type::String => string_schema(rules, dir),
            Type::Double | Type::Float => {
                let mut s = json!({"type": "number"});
                if let Some(min) = rules.min {
                    s["minimum"] = json!(min);
                }
                if let Some(max) = rules.max {
                    s["maximum"] = json!(max);
                }
                s
            }
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                let (lo, hi): (i128, i128) = match ty {
                    Type::Int32 => (i32::MIN.into(), i32::MAX.into()),
                    Type::Int64 => (i64::MIN.into(), i64::MAX.into()),
                    Type::Uint32 => (0, u32::MAX.into()),
                    _ => (0, u64::MAX.into()),
                };
                let lo = rules.int_min.map_or(lo, |v| lo.max(v.into()));
                let hi = rules.int_max.map_or(hi, |v| hi.min(v.into()));
                json!({"type": "integer", "minimum": number(lo), "maximum": number(hi)})
            }
            Type::Bool => json!({"type": "boolean"}),
            Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Type::Message(m) if m == "google.protobuf.Struct" => {
                json!({"type": "object", "additionalProperties": true})
            }
            Type::Message(m) if m == "google.protobuf.Value" => json!({}),
            Type::Message(m) if m == "google.protobuf.ListValue" => json!({"type": "array"}),
            Type::Message(m) => self.reference(m, dir),
        }
    }

    fn operation(&self, api: &Api, service: &Service, method: &Method) -> Value {
        let http = method.http.as_ref().expect("routed");
        let route = &method.route;
        let input = api.message(&method.input);
        let path_vars = http.path_fields();
        let mut parameters: Vec<Value> = path_vars
            .iter()
            .map(|var| {
                json!({
                    "name": var, "in": "path", "required": true,
                    "schema": {"type": "string"},
                    "description": "An id that is not a UUID, or that names nothing the caller may see, is 404."
                })
            })
            .collect();
        let mut op = json!({
            "tags": [if service.name == "DeviceService" { "device" } else { "admin" }],
            "operationId": lower_camel(&method.name),
            "summary": method.summary,
            "description": operation_description(service, method),
            "security": security(route.access()),
            "responses": self.responses(method),
        });
        if http.body.is_empty() {
            for f in input.fields.iter().filter(|f| !path_vars.contains(&f.name)) {
                let mut schema = match &f.label {
                    Label::Single | Label::Optional => self.element(&f.ty, &f.rules, Dir::Request),
                    _ => panic!("{}.{}: query parameters are scalars", input.name, f.name),
                };
                describe(&mut schema, "");
                let mut p = json!({"name": f.name, "in": "query", "required": f.rules.required, "schema": schema});
                if !f.comment.is_empty() {
                    p["description"] = json!(f.comment);
                }
                parameters.push(p);
            }
        } else if method.client_streaming {
            op["requestBody"] = multipart_body(&route.multipart_parts);
        } else {
            let mut schema = self.reference(&method.input, Dir::Request);
            if let Some(item) = body_item_type(api, method) {
                schema = json!({"anyOf": [schema, self.reference(&item, Dir::Request)]});
            }
            let required = input.fields.iter().any(|f| f.rules.required);
            op["requestBody"] = json!({
                "required": required,
                "content": {"application/json": {"schema": schema}}
            });
        }
        if !parameters.is_empty() {
            op["parameters"] = json!(parameters);
        }
        op
    }

    fn responses(&self, method: &Method) -> Value {
        let route = &method.route;
        let status = route.status();
        let mut responses = Map::new();
        let body =
            json!({"application/json": {"schema": self.reference(&method.output, Dir::Response)}});
        if status == 204 {
            responses.insert("204".into(), json!({"description": "Done; no body."}));
        } else {
            let mut ok = json!({"description": if status == 201 { "Created." } else { "OK." }, "content": body});
            if route.etag {
                ok["headers"] = json!({"ETag": {"$ref": "#/components/headers/ETag"}});
                responses.insert(
                    "304".into(),
                    json!({"description": "Not modified: If-None-Match matched the current ETag.",
                           "headers": {"ETag": {"$ref": "#/components/headers/ETag"}}}),
                );
            }
            responses.insert(status.to_string(), ok);
        }
        if !route.no_content_unless.is_empty() {
            responses.insert(
                "204".into(),
                json!({"description": format!("Nothing to answer (`{}` would be empty).", route.no_content_unless)}),
            );
        }
        for (code, name) in ERRORS {
            responses.insert(
                code.to_string(),
                json!({"$ref": format!("#/components/responses/{name}")}),
            );
        }
        Value::Object(responses)
    }
}

fn string_schema(rules: &Rules, dir: Dir) -> Value {
    let mut s = json!({"type": "string"});
    if !rules.one_of.is_empty() {
        s["enum"] = json!(rules.one_of);
        return s;
    }
    if rules.uuid {
        if dir == Dir::Response {
            s["format"] = json!("uuid");
        } else if rules.required {
            s["pattern"] = json!(format!("^{UUID}$"));
        } else {
            s["pattern"] = json!(format!("^({UUID})?$"));
            s["description"] = json!("A UUID; empty means none.");
        }
        return s;
    }
    if rules.timestamp && !rules.device_ts && !rules.required && dir == Dir::Request {
        return json!({"anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "enum": [""]}
        ], "description": "An RFC 3339 time; empty means none."});
    }
    if rules.timestamp || rules.device_ts {
        s["format"] = json!("date-time");
        return s;
    }
    if dir == Dir::Response {
        return s;
    }
    if rules.ip {
        return json!({"anyOf": [
            {"type": "string", "format": "ipv4"},
            {"type": "string", "format": "ipv6"},
            {"type": "string", "enum": [""]}
        ]});
    }
    if rules.timezone {
        let mut names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        names.sort_unstable();
        s["enum"] = json!(names);
        return s;
    }
    if rules.identifier {
        s["pattern"] = json!("^[a-z][a-z0-9_]*$");
        if rules.max_len > 0 {
            s["maxLength"] = json!(rules.max_len);
        }
        return s;
    }
    if rules.http_url {
        s["pattern"] = json!(format!(
            "^https?://[^{SPACE}{CONTROL}/?#@]+(/[^{SPACE}{CONTROL}]*)?$"
        ));
        s["maxLength"] = json!(rules.max_len);
        return s;
    }
    if rules.page_token {
        s["pattern"] = json!("^([A-Za-z0-9_-]{32})?$");
        s["description"] = json!("Empty for the first page, else a next_page_token as answered.");
        return s;
    }
    let min = if rules.required || rules.not_blank {
        rules.min_len.max(1)
    } else {
        rules.min_len
    };
    if min > 0 {
        s["minLength"] = json!(min);
    }
    if rules.max_len > 0 {
        s["maxLength"] = json!(rules.max_len);
    }
    let allowed = if rules.allow_control {
        "[\\s\\S]".to_owned()
    } else {
        format!("[^{CONTROL}]")
    };
    if rules.not_blank {
        let visible = if rules.allow_control {
            format!("[^{SPACE}]")
        } else {
            format!("[^{SPACE}{CONTROL}]")
        };
        s["pattern"] = json!(format!("^{allowed}*{visible}{allowed}*$"));
    } else if !rules.allow_control {
        s["pattern"] = json!(format!("^{allowed}*$"));
    }
    s
}

/// `schema` or null (JSON Schema 2020-12, as OpenAPI 3.1 uses it).
fn or_null(mut schema: Value) -> Value {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let t = t.to_owned();
        schema["type"] = json!([t, "null"]);
        if let Some(e) = schema.get_mut("enum").and_then(Value::as_array_mut) {
            e.push(Value::Null);
        }
        return schema;
    }
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.push(json!("null"));
        return schema;
    }
    if schema.as_object().is_some_and(|o| o.is_empty()) {
        return schema; // anything, null included
    }
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn describe(schema: &mut Value, comment: &str) {
    if !comment.is_empty() {
        schema["description"] = json!(comment);
    }
}

fn number(v: i128) -> Value {
    match (i64::try_from(v), u64::try_from(v)) {
        (Ok(i), _) => json!(i),
        (_, Ok(u)) => json!(u),
        _ => unreachable!("bounds fit 64 bits"),
    }
}

fn lower_camel(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        // The secret may be in the body instead.
        Access::ProvisioningToken | Access::EnrollmentCode => json!([{}, {"bearer": []}]),
        Access::Device | Access::OrgRead | Access::OrgWrite => json!([{"bearer": []}]),
    }
}

fn operation_description(service: &Service, method: &Method) -> String {
    let auth = match method.route.access() {
        Access::Public => "No key needed.",
        Access::ProvisioningToken => {
            "A provisioning token (`swrm_pt_…`), in the body or as the bearer."
        }
        Access::EnrollmentCode => "An enrollment code (`swrm_ec_…`), in the body or as the bearer.",
        Access::Device => "A device key (`Authorization: Bearer swrm_dk_…`).",
        Access::OrgRead => "An organization API key (`Authorization: Bearer swrm_ak_…`), any role.",
        Access::OrgWrite => {
            "An organization API key (`Authorization: Bearer swrm_ak_…`) with role `owner` or `admin`; a `viewer` key gets 403."
        }
    };
    let mut text = String::new();
    if !method.description.is_empty() {
        text.push_str(&method.description);
        text.push_str("\n\n");
    }
    text.push_str(&format!(
        "Auth: {auth}\n\ngRPC: `{}/{}`.",
        service.full_name, method.name
    ));
    let _ = snake;
    text
}

fn multipart_body(parts: &[String]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut encoding = Map::new();
    for part in parts {
        let (name, kind) = part.split_once(':').expect("multipart parts are name:kind");
        let schema = match kind {
            "binary" => {
                required.push(name);
                json!({"type": "string", "format": "binary"})
            }
            "json" => {
                encoding.insert(
                    name.into(),
                    json!({"contentType": "application/json, text/plain"}),
                );
                json!({"type": "string", "description": "A JSON object (see the gRPC metadata message)."})
            }
            "text" => {
                required.push(name);
                json!({"type": "string"})
            }
            other => panic!("unknown multipart part kind {other}"),
        };
        properties.insert(name.into(), schema);
    }
    json!({
        "required": true,
        "content": {"multipart/form-data": {
            "schema": {"type": "object", "properties": properties, "required": required},
            "encoding": encoding
        }}
    })
}

/// Every operation documents every error status the envelope can carry.
const ERRORS: [(u16, &str); 10] = [
    (400, "BadRequest"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "NotFound"),
    (409, "Conflict"),
    (413, "PayloadTooLarge"),
    (415, "UnsupportedMediaType"),
    (429, "TooManyRequests"),
    (501, "NotImplemented"),
    (503, "Unavailable"),
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "The gRPC status name in snake_case, e.g. invalid_argument."},
                "message": {"type": "string", "description": "What went wrong, naming the field when a field is at fault."}
            }
        }}
    })
}

fn error_responses() -> Value {
    let envelope = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let plain = |description: &str| json!({"description": description, "content": envelope});
    let mut unauthorized =
        plain("`unauthenticated`: missing, malformed, unknown, expired, used or revoked secret.");
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}});
    let mut limited = plain("`resource_exhausted`: rate limited.");
    limited["headers"] = json!({
        "Retry-After": {"$ref": "#/components/headers/RetryAfter"},
        "RateLimit": {"$ref": "#/components/headers/RateLimit"},
        "RateLimit-Policy": {"$ref": "#/components/headers/RateLimitPolicy"}
    });
    json!({
        "BadRequest": plain("`invalid_argument`: malformed JSON, wrong types, a value outside its rules (the message names the field)."),
        "Unauthorized": unauthorized,
        "Forbidden": plain("`permission_denied`: the key is valid but its kind or role may not do this."),
        "NotFound": plain("`not_found`: unknown route or id, or an id that belongs to another organization or device."),
        "Conflict": plain("`already_exists` (duplicate) or `failed_precondition` (a state that forbids the action)."),
        "PayloadTooLarge": plain("`resource_exhausted`: body or file over its limit."),
        "UnsupportedMediaType": plain("`invalid_argument`: a content type (or an image type) this route does not take."),
        "TooManyRequests": limited,
        "NotImplemented": plain("`unimplemented`: not built in this release."),
        "Unavailable": plain("`unavailable`: the database or another dependency is not answering; retry."),
    })
}

/// Routes outside the proto: probes.
fn system_operations() -> Vec<(&'static str, Value)> {
    let probe = |id: &str, summary: &str, db: bool| {
        let mut responses = json!({"200": {"description": "Ready.", "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}
        }}}}});
        if db {
            responses["503"] = json!({"$ref": "#/components/responses/Unavailable"});
        }
        json!({"get": {"tags": ["system"], "operationId": id, "summary": summary, "security": [], "responses": responses}})
    };
    let metrics = json!({"get": {
        "tags": ["system"], "operationId": "metrics",
        "summary": "Prometheus metrics (OpenMetrics text)",
        "description": "Open by default; an owner API key when the server runs with --metrics-require-key.",
        "security": [{}, {"bearer": []}],
        "responses": {
            "200": {"description": "The metrics.", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "429": {"$ref": "#/components/responses/TooManyRequests"}
        }
    }});
    vec![
        ("/metrics", metrics),
        (
            "/healthz",
            probe("healthz", "Health: 200 when the database answers", true),
        ),
        (
            "/livez",
            probe(
                "livez",
                "Liveness: 200 while the process answers (no database)",
                false,
            ),
        ),
        (
            "/readyz",
            probe("readyz", "Readiness: 200 when the database answers", true),
        ),
    ]
}
