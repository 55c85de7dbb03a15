//! The TCP sockets a process holds, as the kernel reports them: the
//! inodes behind `/proc/PID/fd`, looked up in `/proc/PID/net/tcp{,6}`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's TCP state of a socket (the hex code of `/proc/net/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// An open connection (`01`).
    Established,
    /// A listening socket (`0A`).
    Listen,
    /// Any other state (closing, waiting, ...), with its code.
    Other(u8),
}

/// One TCP socket of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    /// Its local address.
    pub local: SocketAddr,
    /// Its peer (0.0.0.0:0 for a listener).
    pub remote: SocketAddr,
    /// Its state.
    pub state: TcpState,
}

/// Every TCP socket that process `pid` has open.
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| std::fs::read_link(entry.path()).ok())
                .filter_map(|target| {
                    let text = target.to_string_lossy().into_owned();
                    text.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(parse_line)
                .collect::<Vec<_>>()
        })
        .filter(|(inode, _)| inodes.contains(inode))
        .map(|(_, socket)| socket)
        .collect()
}

/// One line of `/proc/net/tcp{,6}`: its inode and socket.
fn parse_line(line: &str) -> Option<(u64, TcpSocket)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = parse_addr(fields.get(1)?)?;
    let remote = parse_addr(fields.get(2)?)?;
    let state = match u8::from_str_radix(fields.get(3)?, 16).ok()? {
        0x01 => TcpState::Established,
        0x0A => TcpState::Listen,
        other => TcpState::Other(other),
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((
        inode,
        TcpSocket {
            local,
            remote,
            state,
        },
    ))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in
/// host (little-endian) order, then the port.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [v4] => IpAddr::V4(Ipv4Addr::from(v4.to_be_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, word) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_the_kernel_writes_them() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn a_listener_of_this_process_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = tcp_sockets(std::process::id());
        assert!(
            sockets
                .iter()
                .any(|s| s.state == TcpState::Listen && s.local.port() == port),
            "{sockets:?}"
        );
        drop(listener);
        assert!(
            !tcp_sockets(std::process::id())
                .iter()
                .any(|s| s.local.port() == port && s.state == TcpState::Listen)
        );
    }
}
