//! Who is visiting, as far as unique-visitor counting needs: the client address
//! and the User-Agent, handed to the gateway, which hashes them with the day's
//! secret and stores neither.
//!
//! The address comes from the runtime: Spin puts the peer's address in the
//! `spin-client-addr` request header (replacing any a client sent). Behind the
//! deployment's own load balancer that peer is the balancer, so the client is the
//! last address it appended to `X-Forwarded-For`, trusted only from the peers
//! `TRUSTED_PROXIES` names. `wasmtime serve` passes no peer address: there,
//! `TRUSTED_PROXIES=*` (every request comes through the balancer) is the only way
//! to learn the client's address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use counter_api::{UserAgent, Visitor};

/// The header in which Spin passes the peer's `ip:port`.
pub const CLIENT_ADDR_HEADER: &str = "spin-client-addr";

/// The peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustedProxies {
    /// Nobody's (the default): a client could write anything there.
    #[default]
    None,
    /// Every peer's: the web tier is reachable only through the load balancer,
    /// or the runtime does not say who the peer is.
    All,
    /// Peers in these ranges.
    Ranges(Vec<(IpAddr, u8)>),
}

impl TrustedProxies {
    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match (self, peer) {
            (Self::None, _) => false,
            (Self::All, _) => true,
            (Self::Ranges(_), None) => false,
            (Self::Ranges(ranges), Some(peer)) => ranges
                .iter()
                .any(|(net, bits)| in_range(peer.to_canonical(), *net, *bits)),
        }
    }
}

impl FromStr for TrustedProxies {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim() {
            "" => Ok(Self::None),
            "*" => Ok(Self::All),
            list => list
                .split(',')
                .map(|item| {
                    let item = item.trim();
                    let (addr, bits) = match item.split_once('/') {
                        Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| ())?)),
                        None => (item, None),
                    };
                    let addr = addr.parse::<IpAddr>().map_err(|_| ())?.to_canonical();
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    let bits = bits.unwrap_or(max);
                    if bits > max {
                        return Err(());
                    }
                    Ok((addr, bits))
                })
                .collect::<Result<_, ()>>()
                .map(Self::Ranges),
        }
    }
}

fn in_range(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (addr, net, width) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a).into(), u32::from(n).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (addr >> shift) == (net >> shift)
}

/// The request's visitor: its client address and User-Agent, or `None` when the
/// address is unknown (the hit still counts, just not as a visitor).
pub fn visitor(
    header: impl Fn(&str) -> Option<String>,
    trusted: &TrustedProxies,
) -> Option<Visitor> {
    let peer = header(CLIENT_ADDR_HEADER).and_then(|v| parse_addr(&v));
    let forwarded = if trusted.trusts(peer) {
        // The balancer appends the address it saw; anything left of it is the
        // client's own say.
        header("x-forwarded-for").and_then(|v| v.rsplit(',').next().and_then(parse_addr))
    } else {
        None
    };
    let addr = forwarded.or(peer)?;
    let user_agent = UserAgent::truncating(&header("user-agent").unwrap_or_default());
    Some(Visitor { addr, user_agent })
}

/// `ip`, `ip:port` or `[v6]:port`.
fn parse_addr(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    value
        .parse::<IpAddr>()
        .ok()
        .or_else(|| value.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(headers: &[(&str, &str)], trusted: &str) -> Option<String> {
        let trusted: TrustedProxies = trusted.parse().unwrap();
        visitor(
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            &trusted,
        )
        .map(|v| format!("{} {}", v.addr, v.user_agent.as_str()))
    }

    #[test]
    fn the_peer_is_the_visitor_unless_it_is_a_trusted_proxy() {
        let direct = [
            ("spin-client-addr", "198.51.100.7:5123"),
            ("user-agent", "UA"),
        ];
        assert_eq!(visit(&direct, ""), Some("198.51.100.7 UA".into()));

        let spoofed = [
            ("spin-client-addr", "198.51.100.7:5123"),
            ("x-forwarded-for", "203.0.113.1"),
        ];
        assert_eq!(visit(&spoofed, ""), Some("198.51.100.7 ".into()));
        assert_eq!(visit(&spoofed, "10.0.0.0/8"), Some("198.51.100.7 ".into()));

        let proxied = [
            ("spin-client-addr", "10.0.1.5:40000"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.1"),
        ];
        assert_eq!(visit(&proxied, "10.0.0.0/8"), Some("203.0.113.1 ".into()));
        assert_eq!(visit(&proxied, "*"), Some("203.0.113.1 ".into()));

        // wasmtime: no peer address at all.
        let wasmtime = [("x-forwarded-for", "2001:db8::1")];
        assert_eq!(visit(&wasmtime, ""), None);
        assert_eq!(visit(&wasmtime, "10.0.0.0/8"), None);
        assert_eq!(visit(&wasmtime, "*"), Some("2001:db8::1 ".into()));
        assert_eq!(visit(&[("x-forwarded-for", "garbage")], "*"), None);
    }

    #[test]
    fn ranges() {
        assert!(in_range(
            "10.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(!in_range(
            "11.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(in_range(
            "1.2.3.4".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
        assert!(in_range(
            "fd00::1".parse().unwrap(),
            "fd00::".parse().unwrap(),
            8
        ));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("nonsense".parse::<TrustedProxies>().is_err());
    }
}
