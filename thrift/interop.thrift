// The interop IDL: one service whose calls exercise every Thrift type, used by the
// tracebridge interop suite (interop/test_thrift_trace.py) and the golden fixtures
// (interop/capture_thrift_fixtures.py -> tests/fixtures/thrift/).
//
// Python code is generated at test time (interop/thrift_harness.py runs
// `thrift --gen py -out interop/.gen thrift/interop.thrift`); it is never committed.

namespace py interop_thrift

enum Color {
  RED = 1,
  GREEN = 2,
  BLUE = 42,
}

struct Inner {
  1: required string label,
  2: optional i64 weight,
  3: Color color = Color.GREEN,
}

struct Everything {
  // scalars: required, optional and default-valued
  1: required bool flag,
  2: required i8 tiny,
  3: required i16 small,
  4: required i32 medium,
  5: required i64 large,
  6: required double ratio,
  7: required string text,
  8: required binary blob,
  9: optional bool maybe_flag,
  10: optional i8 maybe_tiny,
  11: optional i16 maybe_small,
  12: optional i32 maybe_medium,
  13: optional i64 maybe_large,
  14: optional double maybe_ratio,
  15: optional string maybe_text,
  16: optional binary maybe_blob,
  17: bool default_flag = true,
  18: i32 default_medium = 7,
  19: string default_text = "default",
  20: double default_ratio = 0.5,
  // enum, nested struct and containers
  21: required Color color,
  22: optional Color maybe_color,
  23: required Inner inner,
  24: optional Inner maybe_inner,
  25: list<Inner> inners,
  26: set<string> tags,
  27: map<string, list<i64>> series,
  28: map<i32, map<string, binary>> nested,
  // a high field id (compact protocol long-form field header)
  32000: optional string far_field,
}

exception Oops {
  1: string message,
  2: i32 code,
}

// What the server saw on the call that returned it (THeader info headers, decoded as UTF-8
// with replacement; empty for framed/unframed transports).
struct TraceSeen {
  1: map<string, string> headers,
  2: string client_type,
}

service Interop {
  Everything echo(1: Everything e),
  void ping(),
  string fail(1: string why) throws (1: Oops oops),
  oneway void fire(1: string note),
  TraceSeen whoami(),
}
