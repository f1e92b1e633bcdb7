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

use bytes::{Bytes, BytesMut};
use http::Method;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::codec::grpc;
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
            max_message: grpc::DEFAULT_MAX_MESSAGE_SIZE,
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
        let mut out = BytesMut::new();
        grpc::write_prefix(&mut out, 0, msg.encoded_len());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bridge() -> JsonGrpcBridge {
        JsonGrpcBridge::load(None, &[]).unwrap()
    }

    /// (method path, body selector, response_body) of the binding a request finds.
    fn found(b: &JsonGrpcBridge, verb: Method, path: &str) -> Option<(String, String, String)> {
        let m = b.find(&verb, path).ok()?;
        let binding = b.binding(m.binding).unwrap();
        let body = match &binding.body {
            BodySelector::None => "-".to_owned(),
            BodySelector::All => "*".to_owned(),
            BodySelector::Field(f) => f.name().to_owned(),
        };
        let response = binding
            .response_body
            .as_ref()
            .map_or("-".to_owned(), |f| f.name().to_owned());
        Some((
            b.method_of(binding).unwrap().path.to_string(),
            body,
            response,
        ))
    }

    fn request(
        b: &JsonGrpcBridge,
        verb: Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<String, String> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let m = b.find(&verb, path).map_err(|e| e.message.to_string())?;
        let input = b
            .method_of(b.binding(m.binding).unwrap())
            .unwrap()
            .input
            .clone();
        let frame = b
            .request_frame(m, query, body.as_bytes())
            .map_err(|e| e.message.to_string())?;
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 5
        );
        let msg = DynamicMessage::decode(input, &frame[5..]).unwrap();
        Ok(serde_json::to_string(&msg).unwrap())
    }

    fn t(a: &str, b: &str, c: &str) -> Option<(String, String, String)> {
        Some((a.to_owned(), b.to_owned(), c.to_owned()))
    }

    #[test]
    fn rules_and_default_bindings() {
        let b = bridge();
        assert_eq!(b.services(), ["tracebridge.demo.v1.Greeter"]);
        let say = "/tracebridge.demo.v1.Greeter/SayHello";
        assert_eq!(found(&b, Method::POST, "/v1/greeter/ann"), t(say, "*", "-"));
        assert_eq!(found(&b, Method::GET, "/v1/greeter/ann"), t(say, "-", "-"));
        assert_eq!(
            found(&b, Method::GET, "/v1/lang/en/greeter/people/ann:greet"),
            t(say, "-", "-")
        );
        assert_eq!(
            found(&b, Method::PUT, "/v1/shout/ann"),
            t("/tracebridge.demo.v1.Greeter/Shout", "locale", "message")
        );
        assert_eq!(
            found(&b, Method::POST, "/tracebridge.demo.v1.Greeter/Countdown"),
            t("/tracebridge.demo.v1.Greeter/Countdown", "*", "-")
        );
        assert_eq!(found(&b, Method::GET, say), None);
        assert_eq!(found(&b, Method::DELETE, "/v1/greeter/ann"), None);
        assert_eq!(
            b.find(&Method::GET, "/v2/x").unwrap_err().to_string(),
            "no_route (downstream side): no gRPC method is bound to GET /v2/x (bridged services: tracebridge.demo.v1.Greeter)"
        );
    }

    #[test]
    fn body_path_and_query_fill_the_request() {
        let b = bridge();
        // body "*": the path variable wins over the body.
        assert_eq!(
            request(
                &b,
                Method::POST,
                "/v1/greeter/ann",
                r#"{"name":"bob","count":2}"#
            ),
            Ok(r#"{"name":"ann","count":2}"#.to_owned())
        );
        // No body: query parameters, repeated and nested, JSON or proto names.
        assert_eq!(
            request(
                &b,
                Method::GET,
                "/v1/greeter/ann?tags=a&tags=b&locale.region=GB&visitor_id=7&sentAt=2024-01-01T00:00:00Z",
                ""
            ),
            Ok(r#"{"name":"ann","visitorId":"7","tags":["a","b"],"locale":{"region":"GB"},"sentAt":"2024-01-01T00:00:00Z"}"#.to_owned())
        );
        // body "locale": the body is that field; other fields from path and query.
        assert_eq!(
            request(&b, Method::PUT, "/v1/shout/ann", r#"{"language":"fr"}"#),
            Ok(r#"{"name":"ann","locale":{"language":"fr"}}"#.to_owned())
        );
        assert_eq!(
            request(&b, Method::PUT, "/v1/shout/ann?locale.region=FR", r#"{}"#),
            Err("invalid request for tracebridge.demo.v1.ShoutRequest: query parameter `locale.region`: not allowed: the JSON body fills this field".to_owned())
        );
        assert_eq!(
            request(&b, Method::POST, "/v1/greeter/ann?count=1", "{}"),
            Err("invalid request for tracebridge.demo.v1.HelloRequest: query parameter `count`: not allowed: the JSON body fills the whole message".to_owned())
        );
        assert_eq!(
            request(&b, Method::GET, "/v1/greeter/ann?name=bob", ""),
            Err("invalid request for tracebridge.demo.v1.HelloRequest: query parameter `name`: not allowed: the path binds this field".to_owned())
        );
        assert_eq!(
            request(&b, Method::GET, "/v1/greeter/ann?colour=red", ""),
            Err("invalid request for tracebridge.demo.v1.HelloRequest: query parameter `colour`: \"colour\" is not a field of tracebridge.demo.v1.HelloRequest".to_owned())
        );
        assert_eq!(
            request(&b, Method::GET, "/v1/greeter/ann", "{}"),
            Err("GET /v1/greeter/{name} takes no request body (send its fields as query parameters)".to_owned())
        );
        // The default binding takes the whole message.
        assert_eq!(
            request(
                &b,
                Method::POST,
                "/tracebridge.demo.v1.Greeter/Countdown",
                r#"{"from":3}"#
            ),
            Ok(r#"{"from":3}"#.to_owned())
        );
    }

    #[test]
    fn replies_honour_response_body() {
        let b = bridge();
        let pool = descriptors::builtin().unwrap();
        let mut reply = DynamicMessage::new(
            pool.get_message_by_name("tracebridge.demo.v1.HelloReply")
                .unwrap(),
        );
        let mut words = DynamicMessage::new(
            pool.get_message_by_name("tracebridge.demo.v1.HelloMessage")
                .unwrap(),
        );
        words.set_field_by_name("text", prost_reflect::Value::String("HI".into()));
        reply.set_field_by_name("message", prost_reflect::Value::Message(words));
        reply.set_field_by_name("visitor_id", prost_reflect::Value::I64(5));
        let wire = reply.encode_to_vec();
        let shout = b.find(&Method::PUT, "/v1/shout/a").unwrap().binding;
        let say = b.find(&Method::POST, "/v1/greeter/a").unwrap().binding;
        assert_eq!(
            String::from_utf8(b.reply_json(shout, &wire).unwrap()).unwrap(),
            r#"{"text":"HI","words":0}"#
        );
        assert_eq!(
            String::from_utf8(b.reply_json(say, &wire).unwrap()).unwrap(),
            r#"{"message":{"text":"HI"},"visitorId":"5"}"#
        );
        assert_eq!(
            b.reply_json(say, b"\xff").unwrap_err().kind,
            ErrorKind::UpstreamProtocol
        );
    }

    #[test]
    fn unknown_services_are_named() {
        let e = JsonGrpcBridge::load(None, &["x.Y".to_owned()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "services[0]: \"x.Y\" is not a service of the descriptor set (services: tracebridge.demo.v1.Greeter)"
        );
    }
}
