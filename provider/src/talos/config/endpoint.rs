//! The Kubernetes API endpoint: what a user may write and the URL castle makes of it.

use std::net::{IpAddr, Ipv6Addr};

/// The Kubernetes API port on control planes.
pub const API_PORT: u16 = 6443;

/// The URL every node and client uses for `endpoint`, as `talosctl gen config` makes it: an
/// `https://` URL (or a bare host) with `:6443` added only when no port is given.
///
/// Refuses any other scheme (`http://` included: Talos serves the API over TLS only), a path,
/// and a host or port that cannot be in a URL (e.g. `k8s.lan:443:6443`).
// Talos: cmd/talosctl/cmd/mgmt/gen/config.go (v1.13.0) validateClusterEndpoint,
// fixControlPlaneEndpoint.
pub fn endpoint_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let rest = match endpoint.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
            return Err(format!(
                "{endpoint:?} uses http://, but the Kubernetes API is served over TLS only: write https://"
            ))
        }
        Some((scheme, _)) => {
            return Err(format!(
                "{endpoint:?} has the scheme {scheme:?}: the endpoint is an https:// URL or a host"
            ))
        }
        None => endpoint,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("{endpoint:?} names no host"));
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{endpoint:?} has a path, query or user part: the endpoint is scheme, host and port only"
        ));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{endpoint:?} is not a host with an optional port"))?;
    if !is_host(host) {
        return Err(format!(
            "{endpoint:?}: {host:?} is not a DNS name or an IP address"
        ));
    }
    let port = match port {
        None => API_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{endpoint:?}: {p:?} is not a port (1-65535)"))?,
    };
    let host = if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

/// The host of an endpoint URL made by [`endpoint_url`] (brackets removed).
pub fn url_host(url: &str) -> &str {
    let authority = url.split("://").nth(1).unwrap_or(url);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address (no port).
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if authority.parse::<Ipv6Addr>().is_ok() {
        return Some((authority, None));
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

fn is_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gets_https_and_6443_and_a_port_is_kept_once() {
        assert_eq!(endpoint_url("k8s.lan").unwrap(), "https://k8s.lan:6443");
        assert_eq!(endpoint_url("k8s.lan:443").unwrap(), "https://k8s.lan:443");
        assert_eq!(
            endpoint_url("https://k8s.lan").unwrap(),
            "https://k8s.lan:6443"
        );
        assert_eq!(
            endpoint_url("https://k8s.lan:443/").unwrap(),
            "https://k8s.lan:443"
        );
        assert_eq!(endpoint_url("10.0.0.10").unwrap(), "https://10.0.0.10:6443");
        assert_eq!(endpoint_url("fd00::10").unwrap(), "https://[fd00::10]:6443");
        assert_eq!(
            endpoint_url("https://[fd00::10]:443").unwrap(),
            "https://[fd00::10]:443"
        );
    }

    #[test]
    fn http_other_schemes_paths_and_double_ports_are_refused() {
        assert!(endpoint_url("http://k8s.lan:6443")
            .unwrap_err()
            .contains("https://"));
        assert!(endpoint_url("tcp://k8s.lan").is_err());
        assert!(endpoint_url("https://k8s.lan:443:6443").is_err());
        assert!(endpoint_url("k8s.lan:443:6443").is_err());
        assert!(endpoint_url("https://k8s.lan/api").is_err());
        assert!(endpoint_url("https://").is_err());
        assert!(endpoint_url("k8s.lan:http").is_err());
        assert!(endpoint_url("k8s_lan").is_err());
    }
}
