//! The SSRF guard: webhook targets may not be loopback, private, link-local,
//! unique-local or unspecified addresses unless the operator allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// True for every address a webhook must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
        || o[0] >= 240 // reserved
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 embeds IPv4
        || (s[0] == 0x2002) // 6to4 embeds IPv4
        || ip.to_ipv4().is_some_and(|v4| s[0..6] == [0; 6] && private_v4(v4)) // IPv4-compatible
}

/// Why a target address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("{host} resolves to {addr}, a loopback, private or link-local address (set RELAY_ALLOW_PRIVATE_TARGETS to allow)")]
    Private { host: String, addr: IpAddr },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// Resolve `host` and keep only the addresses a webhook may reach.
pub async fn resolve_allowed(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| TargetError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::NoAddress(host.to_string()));
    }
    if allow_private {
        return Ok(addrs);
    }
    // One private answer taints the name: a name that resolves both ways is a
    // classic rebinding set-up.
    if let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(TargetError::Private {
            host: host.to_string(),
            addr: bad.ip(),
        });
    }
    Ok(addrs)
}

/// reqwest's resolver for deliveries: resolves and checks in one step, so the
/// connection goes to an address that was checked (DNS cannot change the
/// answer in between).
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs = resolve_allowed(name.as_str(), 0, allow)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// The same guard as hyper's resolver, for the webhooks' own connections.
#[derive(Clone)]
pub struct GuardedDns {
    pub allow_private: bool,
}

type Resolving = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<std::vec::IntoIter<SocketAddr>, TargetError>>
            + Send,
    >,
>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = TargetError;
    type Future = Resolving;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow = self.allow_private;
        Box::pin(async move {
            resolve_allowed(name.as_str(), 0, allow)
                .await
                .map(Vec::into_iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused_public_ones_allowed() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a00:1",
            "255.255.255.255",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_localhost_are_checked() {
        for host in ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "localhost"] {
            let r = resolve_allowed(host, 80, false).await;
            assert!(
                matches!(r, Err(TargetError::Private { .. })),
                "{host}: {r:?}"
            );
            assert!(resolve_allowed(host, 80, true).await.is_ok(), "{host}");
        }
    }
}
