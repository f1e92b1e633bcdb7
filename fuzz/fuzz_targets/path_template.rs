//! `google.api.http` path templates: `PathTemplate::parse` of the template, then `matches` of
//! a request path and `percent_decode`. Input: `<template>\n<path>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::bridge::template::{PathTemplate, percent_decode};

fuzz_target!(|data: &[u8]| {
    let (template, path) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/"[..]),
    };
    let _ = percent_decode(path, true);
    let _ = percent_decode(path, false);
    let (Ok(template), Ok(path)) = (std::str::from_utf8(template), std::str::from_utf8(path))
    else {
        return;
    };
    let Ok(parsed) = PathTemplate::parse(template) else {
        return;
    };
    assert_eq!(
        parsed.to_string(),
        template,
        "Display is not the template text"
    );
    if let Some(captures) = parsed.matches(path) {
        assert_eq!(
            captures.len(),
            parsed.variables.len(),
            "a variable was not captured"
        );
    }
});
