//! Where webhooks may go: never to loopback, private, link-local (the cloud metadata address
//! among them), unspecified, shared (CGNAT), broadcast or multicast addresses, unless the
//! operator allows a range with `serve --webhook-allow-net CIDR[,CIDR...]`. A name is checked
//! after DNS resolution, every address it resolves to, so a name cannot smuggle in a private
//! one; the addresses checked are the ones to connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::error::quote;

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is its own /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Net {
    type Err = String;

    fn from_str(text: &str) -> Result<Net, String> {
        let bad = || {
            format!(
                "{} is not an address range (such as 10.0.0.0/8 or ::1/128)",
                quote(text)
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The ranges the operator allows despite the rules below.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedNets(pub Vec<Net>);

impl FromStr for AllowedNets {
    type Err = String;

    fn from_str(text: &str) -> Result<AllowedNets, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Net::from_str)
            .collect::<Result<Vec<Net>, String>>()
            .map(AllowedNets)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is refused, if it is.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (the cloud metadata service among them)")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("a broadcast, multicast or reserved address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// Why a webhook URL cannot be delivered to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undeliverable {
    /// It is not a URL with a host.
    Malformed(String),
    /// Its host resolves to an address webhooks may not go to.
    Internal(String),
    /// Its host does not resolve (now): a rule may still name it; a delivery waits.
    Unresolved(String),
}

impl std::fmt::Display for Undeliverable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undeliverable::Malformed(why)
            | Undeliverable::Internal(why)
            | Undeliverable::Unresolved(why) => f.write_str(why),
        }
    }
}

/// The addresses a webhook URL may be delivered to, or why it may not: every address its host
/// resolves to must be allowed.
pub async fn resolve(url: &str, allowed: &AllowedNets) -> Result<Vec<SocketAddr>, Undeliverable> {
    use Undeliverable::{Internal, Malformed, Unresolved};
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| Malformed(format!("{} is not a URL", quote(url))))?;
    let host = uri
        .host()
        .ok_or_else(|| Malformed(format!("{} names no host", quote(url))))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Unresolved(format!("{} does not resolve: {e}", quote(host))))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Unresolved(format!(
            "{} resolves to no address",
            quote(host)
        )));
    }
    for addr in &addrs {
        if allowed.0.iter().any(|net| net.contains(addr.ip())) {
            continue;
        }
        if let Some(why) = forbidden(addr.ip()) {
            return Err(Internal(format!(
                "{} resolves to {}, {why}; webhooks may not go there unless the server allows it with --webhook-allow-net",
                quote(host),
                addr.ip()
            )));
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn allowed_ranges_read_and_match() {
        let allowed: AllowedNets = "127.0.0.0/8, 10.0.0.0/8,::1".parse().unwrap();
        assert!(allowed.0[0].contains("127.9.9.9".parse().unwrap()));
        assert!(allowed.0[0].contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allowed.0[1].contains("11.0.0.1".parse().unwrap()));
        assert!(allowed.0[2].contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<AllowedNets>().is_err());
        assert!("ten/8".parse::<AllowedNets>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Net>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let none = AllowedNets::default();
        let internal = |refused: Undeliverable, what: &str| match refused {
            Undeliverable::Internal(why) => assert!(why.contains(what), "{why}"),
            other => panic!("{other:?}"),
        };
        internal(
            resolve("http://localhost:9/hook", &none).await.unwrap_err(),
            "loopback",
        );
        internal(
            resolve("http://169.254.169.254/latest/meta-data", &none)
                .await
                .unwrap_err(),
            "link-local",
        );
        internal(
            resolve("http://[::ffff:10.0.0.1]:8080/", &none)
                .await
                .unwrap_err(),
            "private",
        );
        assert!(matches!(
            resolve("http://no-such-host.invalid/", &none).await,
            Err(Undeliverable::Unresolved(_))
        ));
        let allowed: AllowedNets = "127.0.0.0/8,::1/128".parse().unwrap();
        let addrs = resolve("http://localhost:9/hook", &allowed).await.unwrap();
        assert!(addrs.iter().all(|a| a.port() == 9));
        assert_eq!(
            resolve("https://8.8.8.8/x", &none).await.unwrap(),
            vec!["8.8.8.8:443".parse().unwrap()]
        );
    }
}
