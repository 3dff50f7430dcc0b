//! Who the client is, as far as the network can tell: its address and whether it reached
//! us over HTTPS, believing proxy headers only from proxies we were told to trust.
//!
//! `EDGEDESK_TRUSTED_PROXIES` lists CIDRs (`127.0.0.1/32,10.0.0.0/8,::1`). When the peer
//! on the socket is in one of them, the client is the right-most address in
//! `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted proxy, and
//! `X-Forwarded-Proto` (or `Forwarded: proto=`) says whether the client used HTTPS. From
//! any other peer those headers are ignored: anyone can send them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::conn::PeerAddr;

/// An address block: `10.0.0.0/8`, `fd00::/8`, or a bare address (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(u32::from(net).into(), u32::from(ip).into(), self.bits, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.bits, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, bits: u8, width: u8) -> bool {
    let shift = width - bits;
    bits == 0 || (net >> shift) == (ip >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| format!("{text:?} is not an address or CIDR"))?);
        let width = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) => {
                b.parse::<u8>().ok().filter(|b| *b <= width).ok_or_else(|| format!("{text:?}: prefix length must be 0 to {width}"))?
            }
        };
        Ok(Self { network, bits })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The key a client is throttled by: its IPv4 address, or its IPv6 /64 (one subscriber
/// usually holds a whole /64, so single addresses in it cost an attacker nothing).
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// The proxies whose headers are believed (shared by every request).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Arc<Vec<Cidr>>);

impl TrustedProxies {
    pub fn parse(list: &str) -> Result<Self, String> {
        let cidrs = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<Vec<Cidr>, _>>()?;
        Ok(Self(Arc::new(cidrs)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address and scheme, given the socket's peer and the request's headers.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Client {
        let direct = Client { ip: peer.map(canonical), https: false, via_proxy: false };
        let Some(peer) = peer.filter(|p| self.trusts(*p)) else { return direct };
        let forwarded = forwarded_for(headers);
        // Right to left: the last hop our own proxies did not add is the client.
        let ip =
            forwarded.iter().rev().map(|ip| canonical(*ip)).find(|ip| !self.trusts(*ip)).or(forwarded.first().copied()).unwrap_or(peer);
        Client { ip: Some(canonical(ip)), https: forwarded_https(headers), via_proxy: true }
    }
}

/// `Forwarded: for=` values when present, else `X-Forwarded-For`, left to right.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let forwarded: Vec<IpAddr> = values("forwarded")
        .iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| pair.trim().strip_prefix("for=").or_else(|| pair.trim().strip_prefix("For=")))
        })
        .filter_map(node_ip)
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for").iter().filter_map(|v| node_ip(v)).collect()
}

/// An address from `for=` / X-Forwarded-For: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:443"`.
fn node_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    raw.parse::<SocketAddr>().ok().map(|a| a.ip())
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| pair.trim().to_ascii_lowercase().strip_prefix("proto=").map(|p| p.trim_matches('"').to_string()))
        .next_back();
    let proto = forwarded.or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next_back())
            .map(|v| v.trim().to_ascii_lowercase())
    });
    proto.as_deref() == Some("https")
}

/// The calling client (see the module's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    /// Reached us over HTTPS, as a trusted proxy says.
    pub https: bool,
    /// The answer came from a trusted proxy's headers.
    pub via_proxy: bool,
}

impl<S> FromRequestParts<S> for Client
where
    TrustedProxies: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|ConnectInfo(PeerAddr(addr))| addr.ip())
            .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip()));
        Ok(TrustedProxies::from_ref(state).resolve(peer, &parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.2.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.2.3.4".parse().unwrap()), "mapped addresses count as IPv4");
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()) && !host.contains("127.0.0.2".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!(TrustedProxies::parse("127.0.0.1/32, ::1").is_ok());
        assert!(TrustedProxies::parse("127.0.0.1/32,bad").is_err());
    }

    #[test]
    fn proxy_headers_count_only_from_trusted_peers() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1"), ("x-forwarded-proto", "https")]);
        let via = proxies.resolve(Some("10.0.0.5".parse().unwrap()), &h);
        assert_eq!(via.ip, Some("203.0.113.9".parse().unwrap()));
        assert!(via.https && via.via_proxy);
        // The same headers from anyone else are ignored.
        let direct = proxies.resolve(Some("198.51.100.7".parse().unwrap()), &h);
        assert_eq!(direct.ip, Some("198.51.100.7".parse().unwrap()));
        assert!(!direct.https && !direct.via_proxy);
        // A client cannot choose its address by prepending one: the right-most untrusted wins.
        let spoof = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(proxies.resolve(Some("10.0.0.5".parse().unwrap()), &spoof).ip, Some("203.0.113.9".parse().unwrap()));
        // RFC 7239 form, quoted IPv6 with a port.
        let rfc = headers(&[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]);
        let r = proxies.resolve(Some("10.0.0.5".parse().unwrap()), &rfc);
        assert_eq!(r.ip, Some("2001:db8::7".parse().unwrap()));
        assert!(r.https);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = throttle_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = throttle_key("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, throttle_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(throttle_key("192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
