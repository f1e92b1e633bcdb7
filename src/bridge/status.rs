//! gRPC status codes as HTTP: the standard mapping (`google.rpc.Code` → HTTP status, as in
//! `google/rpc/code.proto`'s comments and the gRPC ⇄ HTTP transcoding guides) and the JSON
//! error body a bridged HTTP caller gets.

use http::StatusCode;

/// `(code, name, HTTP status)` for every gRPC status code.
const TABLE: [(u32, &str, u16); 17] = [
    (0, "OK", 200),
    (1, "CANCELLED", 499),
    (2, "UNKNOWN", 500),
    (3, "INVALID_ARGUMENT", 400),
    (4, "DEADLINE_EXCEEDED", 504),
    (5, "NOT_FOUND", 404),
    (6, "ALREADY_EXISTS", 409),
    (7, "PERMISSION_DENIED", 403),
    (8, "RESOURCE_EXHAUSTED", 429),
    (9, "FAILED_PRECONDITION", 400),
    (10, "ABORTED", 409),
    (11, "OUT_OF_RANGE", 400),
    (12, "UNIMPLEMENTED", 501),
    (13, "INTERNAL", 500),
    (14, "UNAVAILABLE", 503),
    (15, "DATA_LOSS", 500),
    (16, "UNAUTHENTICATED", 401),
];

/// The status name (`NOT_FOUND`); codes outside the table are `UNKNOWN`, as gRPC treats them.
pub fn name(code: u32) -> &'static str {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("UNKNOWN", |(_, n, _)| n)
}

/// The HTTP status for a gRPC status code; codes outside the table map as `UNKNOWN` (500).
pub fn http_status(code: u32) -> StatusCode {
    let status = TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(500, |(_, _, s)| *s);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The JSON error body: `{"error": message, "code": n, "status": "NAME", "trace_id": hex}`.
pub fn error_body(code: u32, message: &str, trace_id: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "error": message,
        "code": code,
        "status": name(code),
        "trace_id": trace_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_mapping() {
        let got: Vec<(u32, &str, u16)> = (0..=17)
            .map(|c| (c, name(c), http_status(c).as_u16()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "OK", 200),
                (1, "CANCELLED", 499),
                (2, "UNKNOWN", 500),
                (3, "INVALID_ARGUMENT", 400),
                (4, "DEADLINE_EXCEEDED", 504),
                (5, "NOT_FOUND", 404),
                (6, "ALREADY_EXISTS", 409),
                (7, "PERMISSION_DENIED", 403),
                (8, "RESOURCE_EXHAUSTED", 429),
                (9, "FAILED_PRECONDITION", 400),
                (10, "ABORTED", 409),
                (11, "OUT_OF_RANGE", 400),
                (12, "UNIMPLEMENTED", 501),
                (13, "INTERNAL", 500),
                (14, "UNAVAILABLE", 503),
                (15, "DATA_LOSS", 500),
                (16, "UNAUTHENTICATED", 401),
                (17, "UNKNOWN", 500),
            ]
        );
    }

    #[test]
    fn error_body_shape() {
        assert_eq!(
            error_body(5, "no such user", Some("4bf92f3577b34da6a3ce929d0e0e4736")).to_string(),
            r#"{"code":5,"error":"no such user","status":"NOT_FOUND","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#
        );
    }
}
