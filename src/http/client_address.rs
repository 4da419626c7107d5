//! The client's address behind trusted proxies: `X-Forwarded-For` is read
//! from the right, each hop appended by the proxy to its right, skipping
//! the proxies the hub trusts; the first address that is not one of them
//! is the client. Entries to its left were written by the client itself
//! and are never believed. A peer the hub does not trust is the client,
//! whatever the header says.

use std::net::IpAddr;

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let base: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0-{max}"))?,
        };
        Ok(Self { base, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        match (self.base, address) {
            (IpAddr::V4(base), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 addresses mapped into IPv6 (`::ffff:10.0.0.1`) compare as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Which proxies the hub believes.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// Believe whatever connects directly (`http.trust_forwarded_for`):
    /// only for a hub no client can reach but through its proxy.
    pub any_peer: bool,
    pub networks: Vec<Network>,
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(address))
    }

    /// The client's address, given the socket's peer and the
    /// `X-Forwarded-For` header (if any).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !(self.any_peer || self.trusts(peer)) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut nearest = peer;
        for hop in header.rsplit(',') {
            let Some(address) = parse_hop(hop) else {
                // Garbage: the last hop the hub believes is as far as it knows.
                return nearest;
            };
            if !self.trusts(address) {
                return address;
            }
            nearest = address;
        }
        nearest
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if hop.is_empty() || hop.len() > 64 {
        return None;
    }
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies {
            any_peer: false,
            networks: networks
                .iter()
                .map(|n| Network::parse(n).unwrap())
                .collect(),
        }
    }

    #[test]
    fn networks_parse_and_match() {
        let lan = Network::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains(ip("10.1.2.3")));
        assert!(lan.contains(ip("::ffff:10.1.2.3")), "mapped IPv4");
        assert!(!lan.contains(ip("11.0.0.1")));
        assert!(Network::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(
            Network::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.7"))
        );
        assert!(
            !Network::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.8"))
        );
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "fd00::/129", "example.com", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_is_read_from_the_right_past_trusted_proxies() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = |peer: &str, header: Option<&str>| trusted.client(ip(peer), header);
        // The proxy appended the client; a forged entry to its left is ignored.
        assert_eq!(
            client("10.0.0.5", Some("6.6.6.6, 203.0.113.9")),
            ip("203.0.113.9")
        );
        // Two trusted proxies in a row.
        assert_eq!(
            client("10.0.0.5", Some("203.0.113.9, 10.0.0.7")),
            ip("203.0.113.9")
        );
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client("198.51.100.1", Some("10.0.0.1, 1.2.3.4")),
            ip("198.51.100.1")
        );
        // No header, or nothing but proxies: the nearest trusted hop.
        assert_eq!(client("10.0.0.5", None), ip("10.0.0.5"));
        assert_eq!(client("10.0.0.5", Some("10.0.0.9")), ip("10.0.0.9"));
        // Garbage stops the walk at the last hop believed.
        assert_eq!(
            client("10.0.0.5", Some("1.2.3.4, not-an-ip")),
            ip("10.0.0.5")
        );
        // Ports are allowed.
        assert_eq!(
            client("10.0.0.5", Some("[2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        // Any peer trusted (the legacy switch): only the rightmost entry is believed.
        let legacy = TrustedProxies {
            any_peer: true,
            networks: Vec::new(),
        };
        assert_eq!(
            legacy.client(ip("192.0.2.1"), Some("6.6.6.6, 203.0.113.9")),
            ip("203.0.113.9")
        );
    }
}
