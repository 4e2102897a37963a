//! The contract as build.rs sees it: services, methods with their HTTP
//! binding and `swrm.api.route` options, messages with their fields, rules
//! and comments, read from the descriptor pool protox compiled.

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind};
use std::collections::{BTreeMap, HashMap};

/// `swrm.api.Route`, decoded from the method options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Route {
    #[prost(int32, tag = "1")]
    pub access: i32,
    #[prost(uint32, tag = "2")]
    pub success_status: u32,
    #[prost(bool, tag = "3")]
    pub etag: bool,
    #[prost(string, tag = "4")]
    pub no_content_unless: String,
    #[prost(string, repeated, tag = "5")]
    pub multipart_parts: Vec<String>,
    #[prost(string, tag = "6")]
    pub body_may_be_item_of: String,
    #[prost(bool, tag = "7")]
    pub update_mask_from_body: bool,
    #[prost(string, tag = "8")]
    pub summary: String,
}

/// `swrm.api.Rules`, decoded from the field options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rules {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(uint32, tag = "2")]
    pub min_len: u32,
    #[prost(uint32, tag = "3")]
    pub max_len: u32,
    #[prost(bool, tag = "4")]
    pub not_blank: bool,
    #[prost(bool, tag = "5")]
    pub allow_control: bool,
    #[prost(string, repeated, tag = "6")]
    pub one_of: Vec<String>,
    #[prost(bool, tag = "7")]
    pub uuid: bool,
    #[prost(bool, tag = "8")]
    pub timestamp: bool,
    #[prost(bool, tag = "9")]
    pub ip: bool,
    #[prost(bool, tag = "10")]
    pub timezone: bool,
    #[prost(bool, tag = "11")]
    pub page_token: bool,
    #[prost(double, optional, tag = "12")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "13")]
    pub max: Option<f64>,
    #[prost(uint32, tag = "14")]
    pub max_items: u32,
    #[prost(message, optional, boxed, tag = "15")]
    pub items: Option<Box<Rules>>,
    #[prost(bool, tag = "16")]
    pub secret: bool,
    #[prost(bool, tag = "17")]
    pub scalar_values: bool,
    #[prost(bool, tag = "18")]
    pub device_ts: bool,
    #[prost(uint32, tag = "19")]
    pub min_items: u32,
    #[prost(sint64, optional, tag = "20")]
    pub int_min: Option<i64>,
    #[prost(sint64, optional, tag = "21")]
    pub int_max: Option<i64>,
    #[prost(bool, tag = "22")]
    pub identifier: bool,
    #[prost(bool, tag = "23")]
    pub http_url: bool,
}

/// Who may call a method (`swrm.api.Access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    ProvisioningToken,
    EnrollmentCode,
    Device,
    OrgRead,
    OrgWrite,
}

impl Route {
    pub fn access(&self) -> Access {
        match self.access {
            1 => Access::Public,
            2 => Access::ProvisioningToken,
            3 => Access::EnrollmentCode,
            4 => Access::Device,
            5 => Access::OrgRead,
            6 => Access::OrgWrite,
            other => panic!("swrm.api.route.access {other} is not set or unknown"),
        }
    }
    pub fn status(&self) -> u16 {
        if self.success_status == 0 {
            200
        } else {
            self.success_status as u16
        }
    }
}

pub struct Api {
    pub services: Vec<Service>,
    pub messages: BTreeMap<String, Message>,
}

pub struct Service {
    /// e.g. `DeviceService`.
    pub name: String,
    /// e.g. `swrm.v1.DeviceService`.
    pub full_name: String,
    pub methods: Vec<Method>,
}

pub struct Method {
    /// e.g. `Pair`.
    pub name: String,
    pub input: String,
    pub output: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
    pub http: Option<Http>,
    pub route: Route,
    /// The first paragraph of the comment (or `route.summary`).
    pub summary: String,
    /// The rest of the comment.
    pub description: String,
}

/// A `google.api.http` binding.
pub struct Http {
    /// Lowercase: `get`, `post`, `patch`, `delete`, `put`.
    pub verb: String,
    /// With `{field}` variables, e.g. `/api/v1/devices/{id}`.
    pub path: String,
    /// `*` (the whole message is the body) or empty (query parameters).
    pub body: String,
}

impl Http {
    /// The request fields the path binds (`{id}` → `id`).
    pub fn path_fields(&self) -> Vec<String> {
        self.path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .map(str::to_owned)
            .collect()
    }
}

pub struct Message {
    pub full_name: String,
    pub name: String,
    pub comment: String,
    pub fields: Vec<Field>,
}

pub struct Field {
    pub name: String,
    pub ty: Type,
    pub label: Label,
    /// The real (not synthetic) oneof this field belongs to.
    pub oneof: Option<String>,
    pub comment: String,
    pub rules: Rules,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Bool,
    String,
    Bytes,
    /// A message, by full name (`swrm.v1.Device`, `google.protobuf.Struct`).
    Message(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Label {
    /// A proto3 scalar without presence, or a singular message.
    Single,
    /// proto3 `optional`.
    Optional,
    Repeated,
    /// `map<string, value>`.
    Map(Type),
}

impl Type {
    pub fn is_integer(&self) -> bool {
        matches!(
            self,
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64
        )
    }
}

impl Api {
    pub fn read(pool: &DescriptorPool) -> Result<Self, Box<dyn std::error::Error>> {
        let ext = |name: &str| {
            pool.get_extension_by_name(name)
                .ok_or_else(|| format!("extension {name} is not defined"))
        };
        let http_ext = ext("google.api.http")?;
        let route_ext = ext("swrm.api.route")?;
        let rules_ext = ext("swrm.api.rules")?;
        let comments = Comments::new(pool);

        let mut services = Vec::new();
        for svc in pool.services().filter(|s| s.package_name() == "swrm.v1") {
            let file = svc.parent_file();
            let mut methods = Vec::new();
            for m in svc.methods() {
                let options = m.options();
                let route: Route = option(&options, &route_ext)
                    .ok_or_else(|| format!("{} has no (swrm.api.route) option", m.full_name()))?
                    .transcode_to()?;
                let http = option(&options, &http_ext).map(|rule| http_binding(&rule));
                let comment = comments.get(file.name(), m.path());
                let (mut summary, description) = match comment.split_once("\n\n") {
                    Some((first, rest)) => (first.to_owned(), rest.to_owned()),
                    None => (comment.clone(), String::new()),
                };
                if !route.summary.is_empty() {
                    summary = route.summary.clone();
                }
                methods.push(Method {
                    name: m.name().to_owned(),
                    input: m.input().full_name().to_owned(),
                    output: m.output().full_name().to_owned(),
                    client_streaming: m.is_client_streaming(),
                    server_streaming: m.is_server_streaming(),
                    http,
                    route,
                    summary,
                    description,
                });
            }
            services.push(Service {
                name: svc.name().to_owned(),
                full_name: svc.full_name().to_owned(),
                methods,
            });
        }

        let mut messages = BTreeMap::new();
        for msg in pool.all_messages() {
            if msg.is_map_entry() || msg.package_name() != "swrm.v1" {
                continue;
            }
            let file = msg.parent_file();
            let fields = msg
                .fields()
                .map(|f| {
                    let rules = match option(&f.options(), &rules_ext) {
                        Some(r) => r.transcode_to()?,
                        None => Rules::default(),
                    };
                    Ok(Field {
                        name: f.name().to_owned(),
                        ty: type_of(&f.kind()),
                        label: label_of(&f),
                        oneof: f
                            .containing_oneof()
                            .filter(|o| !o.is_synthetic())
                            .map(|o| o.name().to_owned()),
                        comment: comments.get(file.name(), f.path()),
                        rules,
                    })
                })
                .collect::<Result<Vec<_>, prost::DecodeError>>()?;
            messages.insert(
                msg.full_name().to_owned(),
                Message {
                    full_name: msg.full_name().to_owned(),
                    name: msg.name().to_owned(),
                    comment: comments.get(file.name(), msg.path()),
                    fields,
                },
            );
        }
        Ok(Api { services, messages })
    }

    pub fn message(&self, full_name: &str) -> &Message {
        self.messages
            .get(full_name)
            .unwrap_or_else(|| panic!("message {full_name} is not in swrm.v1"))
    }

    /// Protobuf paths (`.swrm.v1.PairRequest`) of messages with a secret field.
    pub fn messages_with_secrets(&self) -> Vec<String> {
        self.messages
            .values()
            .filter(|m| m.fields.iter().any(|f| f.rules.secret))
            .map(|m| format!(".{}", m.full_name))
            .collect()
    }

    /// Protobuf paths of `Struct` and `map<string, Value>` fields, with the
    /// `crate::json` function that decodes each.
    pub fn free_json_fields(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for m in self.messages.values() {
            for f in &m.fields {
                let path = format!(".{}.{}", m.full_name, f.name);
                let value = Type::Message("google.protobuf.Value".into());
                match (&f.label, &f.ty) {
                    (Label::Single, Type::Message(t)) if t == "google.protobuf.Struct" => {
                        out.push((path, "free_struct"));
                    }
                    (Label::Map(v), _) if *v == value => out.push((path, "free_values")),
                    _ => {}
                }
            }
        }
        out
    }

    /// Protobuf paths of fields that take a device timestamp.
    pub fn device_ts_fields(&self) -> Vec<String> {
        self.messages
            .values()
            .flat_map(|m| {
                m.fields
                    .iter()
                    .filter(|f| f.rules.device_ts)
                    .map(move |f| format!(".{}.{}", m.full_name, f.name))
            })
            .collect()
    }

    /// Every message reachable from `roots` through message fields.
    pub fn reachable(&self, roots: impl IntoIterator<Item = String>) -> Vec<&Message> {
        let mut seen: Vec<String> = Vec::new();
        let mut todo: Vec<String> = roots.into_iter().collect();
        while let Some(name) = todo.pop() {
            if seen.contains(&name) || !self.messages.contains_key(&name) {
                continue;
            }
            for f in &self.message(&name).fields {
                for ty in [Some(&f.ty), map_value(&f.label)].into_iter().flatten() {
                    if let Type::Message(inner) = ty {
                        todo.push(inner.clone());
                    }
                }
            }
            seen.push(name);
        }
        seen.sort();
        seen.iter().map(|n| self.message(n)).collect()
    }

    /// (message, field) pairs a path variable binds (`{id}`): not part of a
    /// body, and not checked as text (an id that is not a UUID is 404).
    pub fn path_bound(&self) -> std::collections::BTreeSet<(String, String)> {
        self.methods()
            .filter_map(|(_, m)| m.http.as_ref().map(|h| (m, h)))
            .flat_map(|(m, h)| h.path_fields().into_iter().map(|f| (m.input.clone(), f)))
            .collect()
    }

    pub fn methods(&self) -> impl Iterator<Item = (&Service, &Method)> {
        self.services
            .iter()
            .flat_map(|s| s.methods.iter().map(move |m| (s, m)))
    }
}

fn map_value(label: &Label) -> Option<&Type> {
    match label {
        Label::Map(v) => Some(v),
        _ => None,
    }
}

fn option(options: &DynamicMessage, ext: &ExtensionDescriptor) -> Option<DynamicMessage> {
    if !options.has_extension(ext) {
        return None;
    }
    options.get_extension(ext).as_message().cloned()
}

fn http_binding(rule: &DynamicMessage) -> Http {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let verb = ["get", "put", "post", "delete", "patch"]
        .into_iter()
        .find(|v| !text(v).is_empty())
        .expect("google.api.http: only get, put, post, delete and patch are supported");
    Http {
        verb: verb.to_owned(),
        path: text(verb),
        body: text("body"),
    }
}

fn type_of(kind: &Kind) -> Type {
    match kind {
        Kind::Double => Type::Double,
        Kind::Float => Type::Float,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Type::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Type::Int64,
        Kind::Uint32 | Kind::Fixed32 => Type::Uint32,
        Kind::Uint64 | Kind::Fixed64 => Type::Uint64,
        Kind::Bool => Type::Bool,
        Kind::String => Type::String,
        Kind::Bytes => Type::Bytes,
        Kind::Message(m) => Type::Message(m.full_name().to_owned()),
        Kind::Enum(e) => panic!(
            "enum {}: the contract uses strings with documented values instead",
            e.full_name()
        ),
    }
}

fn label_of(f: &FieldDescriptor) -> Label {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            unreachable!("a map field is a message of entries")
        };
        assert_eq!(
            entry.map_entry_key_field().kind(),
            Kind::String,
            "{}: map keys are strings",
            f.full_name()
        );
        return Label::Map(type_of(&entry.map_entry_value_field().kind()));
    }
    if f.is_list() {
        return Label::Repeated;
    }
    match f.containing_oneof() {
        Some(o) if o.is_synthetic() => Label::Optional,
        _ => Label::Single,
    }
}

/// Leading comments by (file, source path).
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut map = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for loc in &info.location {
                if let Some(c) = &loc.leading_comments {
                    map.insert((file.name().to_owned(), loc.path.clone()), clean(c));
                }
            }
        }
        Comments(map)
    }

    fn get(&self, file: &str, path: &[i32]) -> String {
        self.0
            .get(&(file.to_owned(), path.to_vec()))
            .cloned()
            .unwrap_or_default()
    }
}

/// protoc-style comments keep each line's leading space.
fn clean(raw: &str) -> String {
    raw.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}
