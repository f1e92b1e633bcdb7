//! `bridge`: cross-protocol payload translation from schemas loaded at start-up. Sits between
//! `policy` (the route chose a bridged upstream) and `trace(inject)` / `upstream` in the flow.
//!
//! Here: HTTP/JSON → gRPC ([`JsonGrpcBridge`]). A route with `bridge = "json-grpc"` sends
//! plain HTTP callers to a gRPC upstream: the request's verb and path pick a method by its
//! `google.api.http` rules (or the default `POST /package.Service/Method`), the JSON body,
//! path variables and query parameters become one protobuf request message, and the gRPC
//! reply comes back as JSON (unary) or newline-delimited JSON (server streaming).
//!
//! - [`descriptors`]: the built-in descriptor set and ones loaded from files.
//! - [`template`]: `google.api.http` path templates.
//! - [`http_rule`]: rules → bindings.
//! - [`fields`]: path variables and query parameters → fields.
//! - [`json`]: proto3 JSON ⇄ protobuf, errors naming the field.
//! - [`reply`]: the gRPC reply body → messages and the final status.
//! - [`status`]: gRPC status → HTTP status, the JSON error body.
//!
//! Everything is pure and I/O-free but [`descriptors::load`], which reads a file at start-up.

pub mod descriptors;
pub mod fields;
pub mod http_rule;
pub mod json;
pub mod reply;
pub mod status;
pub mod template;

use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::error::{ErrorKind, GatewayError, Side};
use http_rule::{Binding, BodySelector};
use template::Captures;

/// Largest JSON request body the bridge reads by default (4 MiB); larger bodies get 413.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// A gRPC method the bridge can call.
#[derive(Debug, Clone)]
pub struct BridgedMethod {
    /// `/package.Service/Method`, the gRPC request path.
    pub path: Arc<str>,
    /// The request message type.
    pub input: MessageDescriptor,
    /// The reply message type.
    pub output: MessageDescriptor,
    /// Whether the upstream streams replies (answered as NDJSON).
    pub server_streaming: bool,
}

/// Why a bridge could not be built from config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The descriptor set cannot be read or decoded.
    #[error("descriptor set: {0}")]
    DescriptorSet(String),
    /// `services[index]` names no service of the set.
    #[error("services[{index}]: {message}")]
    Service {
        /// Index into the configured `services`.
        index: usize,
        /// The fact.
        message: String,
    },
    /// A method's `google.api.http` rule is invalid.
    #[error("google.api.http rule: {0}")]
    Rule(String),
}

/// The HTTP/JSON → gRPC bridge of one upstream: its methods and their HTTP bindings.
#[derive(Debug)]
pub struct JsonGrpcBridge {
    methods: Vec<BridgedMethod>,
    bindings: Vec<Binding>,
    services: Vec<String>,
    /// Largest JSON request body read (413 beyond).
    pub max_request_body: usize,
    /// Largest gRPC reply message accepted (after inflating).
    pub max_message: usize,
}

/// A request matched to a binding: which binding, and what the path variables captured.
#[derive(Debug)]
pub struct Matched {
    /// Index of the binding.
    pub binding: usize,
    /// Path variables: field path and value.
    pub captures: Captures,
}

impl JsonGrpcBridge {
    /// Loads the descriptor set (`None`: the built-in one) and builds the bridge for
    /// `services` (empty: every service in the set).
    pub fn load(descriptor_set: Option<&Path>, services: &[String]) -> Result<Self, BuildError> {
        let pool = match descriptor_set {
            Some(path) => descriptors::load(path),
            None => descriptors::builtin(),
        }
        .map_err(BuildError::DescriptorSet)?;
        Self::new(&pool, services)
    }

    /// Builds the bridge for `services` of `pool` (empty: every service in the pool).
    pub fn new(pool: &DescriptorPool, services: &[String]) -> Result<Self, BuildError> {
        let chosen = if services.is_empty() {
            pool.services().collect::<Vec<_>>()
        } else {
            let mut chosen = Vec::with_capacity(services.len());
            for (index, name) in services.iter().enumerate() {
                let service = pool.get_service_by_name(name).ok_or_else(|| {
                    let known: Vec<String> =
                        pool.services().map(|s| s.full_name().to_owned()).collect();
                    BuildError::Service {
                        index,
                        message: format!(
                            "{name:?} is not a service of the descriptor set (services: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    }
                })?;
                chosen.push(service);
            }
            chosen
        };
        let mut methods = Vec::new();
        let mut rule_bindings = Vec::new();
        let mut default_bindings = Vec::new();
        for service in &chosen {
            for m in service.methods() {
                let index = methods.len();
                let path: Arc<str> = format!("/{}/{}", service.full_name(), m.name()).into();
                let input = m.input();
                let output = m.output();
                if let Some(rule) = descriptors::http_rule(&m) {
                    let found = http_rule::bindings_of(&rule, &input, &output, index)
                        .map_err(|e| BuildError::Rule(format!("{}: {e}", m.full_name())))?;
                    rule_bindings.extend(found);
                }
                default_bindings.push(
                    http_rule::default_binding(&path, index)
                        .map_err(|e| BuildError::Rule(format!("{}: {e}", m.full_name())))?,
                );
                methods.push(BridgedMethod {
                    path,
                    input,
                    output,
                    server_streaming: m.is_server_streaming(),
                });
            }
        }
        // Declared rules first, in declaration order; the default bindings after them.
        rule_bindings.extend(default_bindings);
        Ok(JsonGrpcBridge {
            methods,
            bindings: rule_bindings,
            services: chosen.iter().map(|s| s.full_name().to_owned()).collect(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_message: crate::codec::grpc::DEFAULT_MAX_MESSAGE_SIZE,
        })
    }

    /// The bridged services' full names.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// The binding at `index`.
    pub fn binding(&self, index: usize) -> Option<&Binding> {
        self.bindings.get(index)
    }

    /// The method a binding calls.
    pub fn method_of(&self, binding: &Binding) -> Option<&BridgedMethod> {
        self.methods.get(binding.method)
    }

    /// The first binding whose verb and path template fit the request; a 404 naming the
    /// verb and path when none does.
    pub fn find(&self, verb: &Method, path: &str) -> Result<Matched, GatewayError> {
        for (binding, b) in self.bindings.iter().enumerate() {
            if b.verb == *verb
                && let Some(captures) = b.template.matches(path)
            {
                return Ok(Matched { binding, captures });
            }
        }
        Err(GatewayError::new(
            ErrorKind::NoRoute,
            Side::Downstream,
            format!(
                "no gRPC method is bound to {verb} {path} (bridged services: {})",
                self.services.join(", ")
            ),
        ))
    }

    /// The gRPC request body: one length-prefixed message built from the JSON body (as the
    /// binding's `body` says), the path variables and the query parameters, in that order.
    pub fn request_frame(
        &self,
        matched: Matched,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Bytes, GatewayError> {
        let (binding, method) = self.resolve(matched.binding)?;
        let msg = build_request(binding, method, matched.captures, query, body)
            .map_err(|e| GatewayError::new(ErrorKind::BadRequest, Side::Downstream, e))?;
        let mut out = BytesMut::with_capacity(5 + msg.encoded_len());
        out.put_u8(0);
        out.put_u32(u32::try_from(msg.encoded_len()).unwrap_or(u32::MAX));
        msg.encode(&mut out).map_err(|e| {
            GatewayError::new(ErrorKind::Internal, Side::Internal, "cannot encode request")
                .with_source(e)
        })?;
        Ok(out.freeze())
    }

    /// One gRPC reply message (protobuf) as JSON, honouring the binding's `response_body`.
    pub fn reply_json(&self, binding: usize, message: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let (binding, method) = self.resolve(binding)?;
        let upstream_err =
            |m: String| GatewayError::new(ErrorKind::UpstreamProtocol, Side::Upstream, m);
        let msg = DynamicMessage::decode(method.output.clone(), message).map_err(|e| {
            upstream_err(format!(
                "reply is not a valid {}: {e}",
                method.output.full_name()
            ))
        })?;
        let mut out = Vec::with_capacity(message.len() * 2 + 2);
        match &binding.response_body {
            None => json::encode(&msg, &mut out).map_err(upstream_err)?,
            Some(field) => {
                let options = SerializeOptions::new().skip_default_fields(false);
                let whole = msg
                    .serialize_with_options(serde_json::value::Serializer, &options)
                    .map_err(|e| upstream_err(format!("cannot write reply as JSON: {e}")))?;
                let part = whole
                    .get(field.json_name())
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                serde_json::to_writer(&mut out, &part)
                    .map_err(|e| upstream_err(format!("cannot write reply as JSON: {e}")))?;
            }
        }
        Ok(out)
    }

    fn resolve(&self, binding: usize) -> Result<(&Binding, &BridgedMethod), GatewayError> {
        self.bindings
            .get(binding)
            .and_then(|b| Some((b, self.methods.get(b.method)?)))
            .ok_or_else(|| {
                GatewayError::new(ErrorKind::Internal, Side::Internal, "unknown binding")
            })
    }
}

fn build_request(
    binding: &Binding,
    method: &BridgedMethod,
    captures: Captures,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    let input = &method.input;
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let mut msg = match &binding.body {
        _ if blank => DynamicMessage::new(input.clone()),
        BodySelector::All => json::decode(input, body)?,
        BodySelector::Field(field) => {
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| format!("invalid JSON for {}: {e}", input.full_name()))?;
            let mut object = serde_json::Map::new();
            object.insert(field.name().to_owned(), value);
            json::decode_value(input, serde_json::Value::Object(object))?
        }
        BodySelector::None => {
            return Err(format!(
                "{} {} takes no request body (send its fields as query parameters)",
                binding.verb, binding.template
            ));
        }
    };
    let invalid =
        |what: String, e: String| format!("invalid request for {}: {what}: {e}", input.full_name());
    for (path, value) in &captures {
        fields::set_from_text(&mut msg, path, value)
            .map_err(|e| invalid(format!("path variable `{}`", path.join(".")), e))?;
    }
    let Some(query) = query else {
        return Ok(msg);
    };
    for (name, value) in fields::parse_query(query).map_err(|e| invalid("query".into(), e))? {
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        let bound = match &binding.body {
            BodySelector::All => Some("the JSON body fills the whole message"),
            BodySelector::Field(f) if path[0] == f.name() || path[0] == f.json_name() => {
                Some("the JSON body fills this field")
            }
            _ if captures.iter().any(|(p, _)| *p == path) => Some("the path binds this field"),
            _ => None,
        };
        if let Some(why) = bound {
            return Err(invalid(
                format!("query parameter `{name}`"),
                format!("not allowed: {why}"),
            ));
        }
        fields::set_from_text(&mut msg, &path, &value)
            .map_err(|e| invalid(format!("query parameter `{name}`"), e))?;
    }
    Ok(msg)
}
