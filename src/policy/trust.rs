//! Which downstream peers are trusted proxies (a listener's `trusted_proxies`): their
//! `X-Forwarded-*` headers are kept and extended; everyone else's are overwritten.

use std::fmt;
use std::net::IpAddr;

/// An address block: `10.0.0.0/8`, `::1/128`, or a bare address (the whole address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/prefix`. Host bits beyond the prefix must be zero, so that the
    /// written block is the block matched (`10.1.2.3/8` is refused, not read as `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix {p:?} is not a number from 0 to {max}")),
            },
        };
        let cidr = Cidr { addr, prefix };
        if cidr.masked(addr) != bits(addr) {
            return Err(format!("{text:?} has host bits set beyond /{prefix}"));
        }
        Ok(cidr)
    }

    /// Whether `ip` lies in the block (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == bits(self.addr)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        bits(ip) & u128::MAX.checked_shl(host_bits).unwrap_or(0)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `peer` is in any of `trusted`.
pub fn is_trusted(trusted: &[Cidr], peer: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_addresses() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "::1", false),
            ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("10.0.0.0/8", "::ffff:10.1.1.1", true),
        ];
        for (block, peer, want) in cases {
            let c = Cidr::parse(block).unwrap();
            assert_eq!(c.contains(ip(peer)), *want, "{block} ∋ {peer}");
        }
    }

    #[test]
    fn malformed_blocks() {
        for (text, why) in [
            ("10.0.0.0/33", "prefix \"33\" is not a number from 0 to 32"),
            ("10.0.0/8", "\"10.0.0\" is not an IP address"),
            ("10.1.0.0/8", "\"10.1.0.0/8\" has host bits set beyond /8"),
            ("::1/x", "prefix \"x\" is not a number from 0 to 128"),
            ("", "\"\" is not an IP address"),
        ] {
            assert_eq!(Cidr::parse(text), Err(why.to_owned()), "{text}");
        }
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    }
}
