#!/usr/bin/env node
// grpc interop cases (doc/interop-test-descriptions.md in grpc/grpc) with an @grpc/grpc-js
// client. The .proto files are loaded from the repository's proto/ at run time.
//
//   node interop_client.js HOST:PORT [case ...]
//
// Prints one JSON line per case: {"case", "ok", "error"?, "calls": [[call id, trace id, span id]]}.
// Every call carries a W3C traceparent with a fresh random trace id and an x-interop-call id,
// so the test can find it at the server. Exits 1 if any case failed.
'use strict';

const crypto = require('crypto');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const DEADLINE_MS = 10000;
const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';

const definition = protoLoader.loadSync('grpc/testing/test.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const testing = grpc.loadPackageDefinition(definition).grpc.testing;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function zeros(n) {
  return { body: Buffer.alloc(n) };
}

function allZero(buf) {
  return buf.every((b) => b === 0);
}

function deadline() {
  return { deadline: Date.now() + DEADLINE_MS };
}

// Per-case call log: metadata with a fresh trace context, remembered for the report.
function newCall(calls, extra = []) {
  const traceId = crypto.randomBytes(16).toString('hex');
  const spanId = crypto.randomBytes(8).toString('hex');
  const callId = crypto.randomBytes(16).toString('hex');
  const md = new grpc.Metadata();
  md.set('traceparent', `00-${traceId}-${spanId}-01`);
  md.set('x-interop-call', callId);
  for (const [k, v] of extra) md.set(k, v);
  calls.push([callId, traceId, spanId]);
  return md;
}

function unary(client, method, request, md) {
  // Resolves once both the callback and the 'status' event (with the trailers) have come.
  return new Promise((resolve) => {
    let initial = null;
    let outcome = null;
    let trailing = null;
    const finish = () => {
      if (outcome && trailing) resolve({ ...outcome, initial, trailing: trailing.metadata });
    };
    const call = client[method](request, md, deadline(), (err, response) => {
      outcome = { err, response };
      finish();
    });
    call.on('metadata', (m) => {
      initial = m;
    });
    call.on('status', (status) => {
      trailing = status;
      finish();
    });
  });
}

// Collects a streaming call: responses, initial metadata, final status (never rejects).
function collect(call) {
  return new Promise((resolve) => {
    const responses = [];
    let initial = null;
    let err = null;
    call.on('metadata', (m) => {
      initial = m;
    });
    call.on('data', (r) => responses.push(r));
    call.on('error', (e) => {
      err = e;
    });
    call.on('status', (status) => resolve({ responses, initial, status, err }));
  });
}

const CASES = {
  async empty_unary(client, calls) {
    const { err, response } = await unary(client, 'EmptyCall', {}, newCall(calls));
    check(!err, `EmptyCall failed: ${err && err.message}`);
    check(response !== null && response !== undefined, 'EmptyCall returned no response');
  },

  async large_unary(client, calls) {
    const request = { response_size: 314159, payload: zeros(271828) };
    const { err, response } = await unary(client, 'UnaryCall', request, newCall(calls));
    check(!err, `UnaryCall failed: ${err && err.message}`);
    check(response.payload.body.length === 314159, `response body ${response.payload.body.length} bytes, want 314159`);
    check(allZero(response.payload.body), 'response body is not all zeros');
  },

  async server_streaming(client, calls) {
    const sizes = [31415, 9, 2653, 58979];
    const request = { response_parameters: sizes.map((size) => ({ size })) };
    const { responses, status } = await collect(client.StreamingOutputCall(request, newCall(calls), deadline()));
    check(status.code === grpc.status.OK, `status ${status.code} ${status.details}`);
    const got = responses.map((r) => r.payload.body.length);
    check(JSON.stringify(got) === JSON.stringify(sizes), `response sizes ${got}, want ${sizes}`);
  },

  async ping_pong(client, calls) {
    const steps = [
      [31415, 27182],
      [9, 8],
      [2653, 1828],
      [58979, 45904],
    ];
    const call = client.FullDuplexCall(newCall(calls), deadline());
    const sizes = [];
    const done = new Promise((resolve) => {
      let err = null;
      call.on('data', (r) => {
        sizes.push(r.payload.body.length);
        if (sizes.length < steps.length) send(sizes.length);
        else call.end();
      });
      call.on('error', (e) => {
        err = e;
      });
      call.on('status', (status) => resolve({ status, err }));
    });
    function send(i) {
      const [size, payload] = steps[i];
      call.write({ response_parameters: [{ size }], payload: zeros(payload) });
    }
    send(0);
    const { status } = await done;
    check(status.code === grpc.status.OK, `status ${status.code} ${status.details}`);
    check(JSON.stringify(sizes) === JSON.stringify([31415, 9, 2653, 58979]), `response sizes ${sizes}`);
  },

  async custom_metadata(client, calls) {
    const echo = [
      [ECHO_INITIAL, 'test_initial_metadata_value'],
      [ECHO_TRAILING, Buffer.from([0xab, 0xab, 0xab])],
    ];
    const verify = (what, initial, trailing) => {
      const i = initial ? initial.get(ECHO_INITIAL) : [];
      check(i.length === 1 && i[0] === 'test_initial_metadata_value', `${what}: initial ${ECHO_INITIAL} = ${JSON.stringify(i)}`);
      const t = trailing ? trailing.get(ECHO_TRAILING) : [];
      check(
        t.length === 1 && Buffer.compare(t[0], Buffer.from([0xab, 0xab, 0xab])) === 0,
        `${what}: trailing ${ECHO_TRAILING} = ${JSON.stringify(t)}`,
      );
    };
    const request = { response_size: 314159, payload: zeros(271828) };
    const u = await unary(client, 'UnaryCall', request, newCall(calls, echo));
    check(!u.err, `UnaryCall failed: ${u.err && u.err.message}`);
    verify('UnaryCall', u.initial, u.trailing);

    const call = client.FullDuplexCall(newCall(calls, echo), deadline());
    const result = collect(call);
    call.write({ response_parameters: [{ size: 314159 }], payload: zeros(271828) });
    call.end();
    const { responses, initial, status } = await result;
    check(status.code === grpc.status.OK, `FullDuplexCall status ${status.code} ${status.details}`);
    check(responses.length === 1 && responses[0].payload.body.length === 314159, 'FullDuplexCall response size');
    verify('FullDuplexCall', initial, status.metadata);
  },

  async status_code_and_message(client, calls) {
    const response_status = { code: 2, message: 'test status message' };
    const u = await unary(client, 'UnaryCall', { response_status }, newCall(calls));
    check(u.err, 'UnaryCall succeeded');
    check(u.err.code === 2, `UnaryCall code ${u.err.code}, want 2`);
    check(u.err.details === 'test status message', `UnaryCall message ${JSON.stringify(u.err.details)}`);

    const call = client.FullDuplexCall(newCall(calls), deadline());
    const result = collect(call);
    call.write({ response_status });
    call.end();
    const { status } = await result;
    check(status.code === 2, `FullDuplexCall code ${status.code}, want 2`);
    check(status.details === 'test status message', `FullDuplexCall message ${JSON.stringify(status.details)}`);
  },
};

async function main() {
  const [address, ...names] = process.argv.slice(2);
  if (!address) {
    console.error('usage: interop_client.js HOST:PORT [case ...]');
    process.exit(2);
  }
  const client = new testing.TestService(address, grpc.credentials.createInsecure());
  let failed = false;
  for (const name of names.length ? names : Object.keys(CASES)) {
    const calls = [];
    try {
      if (!CASES[name]) throw new Error(`unknown case ${name}`);
      await CASES[name](client, calls);
      console.log(JSON.stringify({ case: name, ok: true, calls }));
    } catch (e) {
      failed = true;
      console.log(JSON.stringify({ case: name, ok: false, error: String(e && e.message), calls }));
    }
  }
  client.close();
  process.exit(failed ? 1 : 0);
}

main();
