//! Where a request comes from, for the limits that count per source (logins): the TCP peer of the
//! connection (from the accept loop, `listener::peer`, or axum's `ConnectInfo` under another
//! server), or — when that peer is one of the operator's
//! trusted reverse proxies (`ServerConfig::trusted_proxies`) — the address that proxy appended to
//! `X-Forwarded-For`. An IPv6 source is its /64, the block one host usually has.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;

use crate::state::AppState;

/// The source address of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientSource(pub(crate) IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // No peer (a request built in-process, not accepted from a socket): the unspecified
        // address, one shared source.
        let peer = crate::listener::peer()
            .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0))
            .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
        Ok(ClientSource(source_of(
            peer,
            &parts.headers,
            &app.config.trusted_proxies,
        )))
    }
}

/// The source of a request from `peer`: behind trusted proxies, the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy (anything left of it was written
/// by the client and proves nothing).
pub(crate) fn source_of(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted_proxies.iter().any(|p| canonical(*p) == peer) {
        return block(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    let client = forwarded
        .iter()
        .rev()
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok().map(canonical))
        .find(|ip| !trusted_proxies.iter().any(|p| canonical(*p) == *ip));
    block(client.unwrap_or(peer))
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The block a source is counted by: an IPv4 address, an IPv6 /64.
fn block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn the_peer_unless_a_trusted_proxy_vouches_for_another() {
        let proxies = [ip("127.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            source_of(ip("198.51.100.9"), &xff("1.2.3.4"), &proxies),
            ip("198.51.100.9"),
            "untrusted peer: its header is ignored"
        );
        assert_eq!(source_of(ip("127.0.0.1"), &HeaderMap::new(), &proxies), ip("127.0.0.1"));
        assert_eq!(
            source_of(ip("127.0.0.1"), &xff("1.2.3.4, 198.51.100.9"), &proxies),
            ip("198.51.100.9"),
            "the proxy's own entry, not the client's"
        );
        assert_eq!(
            source_of(ip("127.0.0.1"), &xff("198.51.100.9, 10.0.0.2"), &proxies),
            ip("198.51.100.9"),
            "a chain of trusted proxies"
        );
        assert_eq!(source_of(ip("127.0.0.1"), &xff("garbage"), &proxies), ip("127.0.0.1"));
        assert_eq!(
            source_of(ip("::ffff:127.0.0.1"), &xff("203.0.113.5"), &proxies),
            ip("203.0.113.5"),
            "v4-mapped peers"
        );
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1"), &HeaderMap::new(), &[]),
            ip("2001:db8:1:2::")
        );
    }
}
