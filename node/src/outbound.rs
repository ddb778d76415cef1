//! Where the node may send requests on someone else's word: webhook and topic receivers an
//! application names, push gateways and push services. A leaf: pure rules, no IO.

/// Whether an application may point the node at `ip`.
pub(crate) fn receiver_allowed(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

#[cfg(test)]
mod tests {
    use super::receiver_allowed;

    #[test]
    fn applications_cannot_aim_the_node_at_itself_or_metadata_services() {
        let allowed = |ip: &str| receiver_allowed(ip.parse().unwrap(), false);
        assert!(allowed("10.1.2.3"), "a company's ERP on a private network");
        assert!(allowed("192.168.0.10"));
        assert!(allowed("203.0.113.7"));
        assert!(!allowed("127.0.0.1"));
        assert!(!allowed("::1"));
        assert!(!allowed("::ffff:127.0.0.1"));
        assert!(!allowed("169.254.169.254"), "cloud metadata");
        assert!(!allowed("fe80::1"));
        assert!(!allowed("0.0.0.0"));
        assert!(receiver_allowed("127.0.0.1".parse().unwrap(), true));
    }
}
