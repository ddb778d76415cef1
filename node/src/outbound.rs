//! Where the node may send requests on someone else's word: webhook and topic receivers an
//! application names, push gateways and push services. A leaf: pure rules, no IO.

/// Whether an application may point the node at `ip`.
pub(crate) fn receiver_allowed(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    let ip = unmapped(ip);
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

/// Whether a Web Push endpoint may be at `ip`: where applications' receivers may be (no
/// link-local or metadata addresses; loopback only if allowed), and public besides.
pub(crate) fn public_address(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    if !receiver_allowed(ip, allow_loopback) {
        return false;
    }
    let ip = unmapped(ip);
    if ip.is_loopback() {
        // Allowed, or `receiver_allowed` would have said no.
        return true;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || a == 0
                || a >= 240
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 198 && (b & 0xfe) == 18)
                || (a == 192 && b == 0 && c == 0))
        }
        IpAddr::V6(v6) => {
            let [s0, s1, s2, s3, ..] = v6.segments();
            if s0 == 0x2002 {
                // 6to4 carries an IPv4 address: judge that one.
                let [a, b] = s1.to_be_bytes();
                let [c, d] = s2.to_be_bytes();
                return public_address(IpAddr::from([a, b, c, d]), allow_loopback);
            }
            !(v6.is_unique_local()
                || (s0 & 0xffc0) == 0xfec0
                || (s0 == 0x64 && s1 == 0xff9b)
                || (s0 == 0x2001 && s1 == 0)
                || (s0 == 0 && s1 == 0 && s2 == 0 && s3 == 0))
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::{public_address, receiver_allowed};

    #[test]
    fn only_public_addresses_take_web_push() {
        let ok = |s: &str| public_address(s.parse().unwrap(), false);
        assert!(ok("142.250.74.10"));
        assert!(ok("2a00:1450:4001:80b::200a"));
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.0.1",
            "0.0.0.0",
            "::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "64:ff9b::a01:203",
            "2002:a01:203::1",
            "2001:0:4136:e378::1",
            "::10.1.2.3",
        ] {
            assert!(!ok(bad), "{bad} must be refused");
        }
        assert!(public_address("127.0.0.1".parse().unwrap(), true));
        assert!(!public_address("::ffff:10.0.0.1".parse().unwrap(), true));
    }

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
