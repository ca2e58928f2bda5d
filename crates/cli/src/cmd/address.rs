//! The address other machines reach a server by, for the ready-to-paste command `serve`
//! prints: `0.0.0.0:7070` works for nobody else.

use std::net::{IpAddr, SocketAddr};

/// The `host:port` to print for a server bound to `bound`, and, when it had to be guessed (a
/// wildcard bind), a note saying so.
pub fn reachable(bound: SocketAddr) -> (String, Option<String>) {
    if !bound.ip().is_unspecified() {
        return (bound.to_string(), None);
    }
    let addresses: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|iface| iface.ip()).collect(),
        Err(err) => {
            tracing::debug!(cause = %err, "could not list the network interfaces");
            Vec::new()
        }
    };
    choose(bound, &addresses, host_name().as_deref())
}

/// [`reachable`]'s decision: the first non-loopback address (IPv4 first, and of the bound
/// family when bound to one), else the host's name, else loopback.
fn choose(
    bound: SocketAddr,
    addresses: &[IpAddr],
    host_name: Option<&str>,
) -> (String, Option<String>) {
    let port = bound.port();
    let usable = |ip: &&IpAddr| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
            && (bound.is_ipv6() || ip.is_ipv4())
    };
    let picked = addresses
        .iter()
        .filter(usable)
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.iter().find(usable));
    let name = host_name.filter(|name| !name.is_empty() && *name != "localhost");
    match (picked, name) {
        (Some(ip), name) => (
            SocketAddr::new(*ip, port).to_string(),
            Some(format!(
                "the server listens on all addresses ({bound}); {ip} is this machine's first \
                 non-loopback address{}: use the name or address other machines reach it by",
                name.map(|name| format!(" ({name})")).unwrap_or_default()
            )),
        ),
        (None, Some(name)) => (
            format!("{name}:{port}"),
            Some(format!(
                "the server listens on all addresses ({bound}); {name} is this machine's name: \
                 use the name or address other machines reach it by"
            )),
        ),
        (None, None) => (
            SocketAddr::new(
                if bound.is_ipv6() {
                    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                },
                port,
            )
            .to_string(),
            Some(format!(
                "the server listens on all addresses ({bound}) but this machine has no other \
                 address than loopback"
            )),
        ),
    }
}

/// This machine's host name, if it has one.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_specific_bind_is_printed_as_it_is() {
        let bound: SocketAddr = "192.168.1.5:7070".parse().unwrap();
        assert_eq!(reachable(bound), ("192.168.1.5:7070".to_owned(), None));
    }

    #[test]
    fn a_wildcard_bind_prints_a_reachable_address_and_says_so() {
        let bound: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let addresses = [
            ip("127.0.0.1"),
            ip("fe80::1"),
            ip("10.0.0.7"),
            ip("192.168.1.5"),
        ];
        let (host, note) = choose(bound, &addresses, Some("nas"));
        assert_eq!(host, "10.0.0.7:7070");
        let note = note.unwrap();
        assert!(
            note.contains("0.0.0.0:7070") && note.contains("(nas)"),
            "{note}"
        );
        // No address but loopback: the host's name.
        let (host, note) = choose(bound, &[ip("127.0.0.1")], Some("nas"));
        assert_eq!(host, "nas:7070");
        assert!(note.unwrap().contains("this machine's name"));
        let (host, _) = choose(bound, &[ip("127.0.0.1")], None);
        assert_eq!(host, "127.0.0.1:7070");
        // An IPv4 wildcard never prints an IPv6 address; an IPv6 one may.
        let (host, _) = choose(bound, &[ip("2001:db8::5")], None);
        assert_eq!(host, "127.0.0.1:7070");
        let v6: SocketAddr = "[::]:7070".parse().unwrap();
        let (host, _) = choose(v6, &[ip("2001:db8::5")], None);
        assert_eq!(host, "[2001:db8::5]:7070");
    }
}
