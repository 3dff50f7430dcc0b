//! Reaching a server that a workspace's users named (a mail server now; webhook targets
//! later): only at public addresses, unless the operator allowed private ones.
//!
//! A workspace owner is not the operator: letting them point the server at any host would
//! let them probe and talk to what sits beside it (the database, a cloud metadata endpoint,
//! the admin side of a router). So a host name is resolved once, every address it gives is
//! checked against [`is_public`], and the connection is made to exactly the addresses that
//! passed, so an answer that changes between the check and the connection (DNS rebinding)
//! cannot slip a private address in. A self-hosted desk whose mail server sits on its own
//! network allows private addresses with a setting (`Reach::Any`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// Which addresses a connection may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public unicast addresses only.
    Public,
    /// Any address, loopback and private networks included (the operator's choice).
    Any,
}

/// Why a server could not be reached, in words a workspace owner can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{host} resolves to {addr}, a private or reserved address that this server does not connect to")]
    NotPublic { host: String, addr: IpAddr },
    #[error("cannot connect to {host} port {port}: {reason}")]
    Connect { host: String, port: u16, reason: String },
    #[error("{host} port {port} did not answer within {seconds} s")]
    Timeout { host: String, port: u16, seconds: u64 },
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared
/// (CGNAT), multicast, broadcast, unspecified, documentation, benchmarking or otherwise
/// reserved, in IPv4 and IPv6, including IPv4 addresses carried inside IPv6 (mapped,
/// compatible, NAT64 and 6to4 forms).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] == 0x2001 && segments[1] < 0x0200)
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]))
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`, `64:ff9b:1::/48`) or 6to4 (`2002:aabb:ccdd::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 1, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// The addresses `host` resolves to, every one of them allowed by `reach`: one address that
/// is not refuses the host (a name that mixes public and private answers is not trusted).
pub async fn resolve(host: &str, port: u16, reach: Reach) -> Result<Vec<SocketAddr>, OutboundError> {
    let resolve_error = |reason: String| OutboundError::Resolve { host: host.to_string(), reason };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|e| resolve_error(e.to_string()))?.collect();
    if addrs.is_empty() {
        return Err(resolve_error("no addresses".into()));
    }
    if reach == Reach::Public
        && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(OutboundError::NotPublic { host: host.to_string(), addr: bad.ip() });
    }
    Ok(addrs)
}

/// A TCP connection to `host`:`port` at one of its allowed addresses, tried in turn, each
/// within `timeout`.
pub async fn connect(host: &str, port: u16, reach: Reach, timeout: Duration) -> Result<TcpStream, OutboundError> {
    let addrs = tokio::time::timeout(timeout, resolve(host, port, reach)).await.map_err(|_| OutboundError::Timeout {
        host: host.to_string(),
        port,
        seconds: timeout.as_secs(),
    })??;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(OutboundError::Connect { host: host.to_string(), port, reason: e.to_string() }),
            Err(_) => last = Some(OutboundError::Timeout { host: host.to_string(), port, seconds: timeout.as_secs() }),
        }
    }
    Err(last.unwrap_or_else(|| OutboundError::Resolve { host: host.to_string(), reason: "no addresses".into() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_pass() {
        for public in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::c0a8:101",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused_unless_allowed() {
        let refused = resolve("localhost", 25, Reach::Public).await.unwrap_err();
        assert!(matches!(refused, OutboundError::NotPublic { .. }), "{refused}");
        assert!(refused.to_string().contains("private or reserved"));
        assert!(!resolve("127.0.0.1", 25, Reach::Any).await.unwrap().is_empty());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(connect("127.0.0.1", port, Reach::Public, Duration::from_secs(1)).await.is_err());
        assert!(connect("127.0.0.1", port, Reach::Any, Duration::from_secs(1)).await.is_ok());
    }
}
