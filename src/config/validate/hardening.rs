//! An http listener's hostile-input keys: `path_normalization` and `trusted_proxies`.

use super::{Errors, choice, q};
use crate::config::{ListenerProtocol, PathNormalization};
use crate::policy::Cidr;

const PATH_NORMALIZATIONS: &[(&str, PathNormalization)] = &[
    ("strict", PathNormalization::Strict),
    ("decode_dots", PathNormalization::DecodeDots),
    ("off", PathNormalization::Off),
];

/// `path_normalization`: a known mode, on an http listener; default strict.
pub(super) fn path_normalization(
    errs: &mut Errors,
    at: &str,
    value: Option<&str>,
    protocol: Option<ListenerProtocol>,
) -> PathNormalization {
    let Some(value) = value else {
        return PathNormalization::default();
    };
    let path = format!("{at}.path_normalization");
    http_only(errs, &path, protocol);
    choice(
        errs,
        &path,
        value,
        "path_normalization",
        PATH_NORMALIZATIONS,
    )
    .unwrap_or_default()
}

/// `trusted_proxies`: CIDR blocks or addresses, on an http listener; default none.
pub(super) fn trusted_proxies(
    errs: &mut Errors,
    at: &str,
    values: Option<&[String]>,
    protocol: Option<ListenerProtocol>,
) -> Vec<Cidr> {
    let Some(values) = values else {
        return Vec::new();
    };
    http_only(errs, &format!("{at}.trusted_proxies"), protocol);
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match Cidr::parse(v) {
            Ok(c) => Some(c),
            Err(why) => {
                errs.push(
                    format!("{at}.trusted_proxies[{i}]"),
                    format!("{} is not an address or CIDR block: {why}", q(v)),
                );
                None
            }
        })
        .collect()
}

fn http_only(errs: &mut Errors, path: &str, protocol: Option<ListenerProtocol>) {
    if protocol == Some(ListenerProtocol::Thrift) {
        errs.push(path, "applies to http listeners only (this one is thrift)");
    }
}
