//! This host's address on the mesh, for ports published on all interfaces (no `--ip`).
//!
//! The host name is resolved first. Debian maps it to `127.0.1.1` in `/etc/hosts`, and
//! a loopback (or unspecified, or link-local) address registered for a service sends
//! every proxy on another host to itself. Such an answer is never used: the IPv4
//! address of the interface that holds the default route (read from the kernel:
//! `/proc/net/route`, then `getifaddrs`) stands in, and if there is none the error
//! says to pass `--ip`.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

/// The address to register, and how it was found (for the one log line that says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub ip: IpAddr,
    /// A sentence fragment: `host name "n1" resolves to 10.0.0.5`, or why the default
    /// route's interface was used instead.
    pub why: String,
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// This host's address for `hostname`: what the name resolves to when that is usable
/// on the network, else the default route's interface's IPv4 address. The error is
/// one line that ends by asking for `--ip`. Resolving may query DNS; the kernel is
/// read only when the name gives no usable address.
pub fn host_address(hostname: &str) -> Result<HostAddress, String> {
    decide(hostname, &resolve(hostname), default_route)
}

/// Whether an address can be registered for other hosts to reach this one.
pub fn usable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6.is_multicast())
        }
    }
}

/// Why an address is not usable, for messages (`127.0.1.1 (loopback)`).
fn describe(ip: IpAddr) -> String {
    let why = match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_unspecified() => "unspecified",
        IpAddr::V6(v6) if v6.is_unspecified() => "unspecified",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "link-local",
        _ if !usable(ip) => "not unicast",
        _ => return ip.to_string(),
    };
    format!("{ip} ({why})")
}

/// The first usable address, IPv4 first (the mesh's proxies are IPv4 first too).
pub fn choose(addrs: &[IpAddr]) -> Option<IpAddr> {
    let good: Vec<IpAddr> = addrs.iter().copied().filter(|ip| usable(*ip)).collect();
    good.iter()
        .find(|ip| ip.is_ipv4())
        .or(good.first())
        .copied()
}

/// The default route's interface and its IPv4 addresses, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub addrs: Vec<Ipv4Addr>,
}

/// The decision: the name's answer, else the default route, which `route` reads
/// (None: there is none, or it could not be read) only when the name's answer is not
/// usable.
fn decide(
    hostname: &str,
    resolved: &Result<Vec<IpAddr>, String>,
    route: impl FnOnce() -> Option<Route>,
) -> Result<HostAddress, String> {
    if let Ok(addrs) = resolved {
        if let Some(ip) = choose(addrs) {
            return Ok(HostAddress {
                ip,
                why: format!("host name {hostname:?} resolves to {ip}"),
            });
        }
    }
    let name_says = match resolved {
        Ok(addrs) if addrs.is_empty() => format!("host name {hostname:?} resolves to nothing"),
        Ok(addrs) => format!(
            "host name {hostname:?} resolves to {}",
            addrs
                .iter()
                .map(|ip| describe(*ip))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!("cannot resolve host name {hostname:?} ({e})"),
    };
    match route() {
        Some(r) => match r.addrs.iter().copied().find(|a| usable(IpAddr::V4(*a))) {
            Some(a) => Ok(HostAddress {
                ip: IpAddr::V4(a),
                why: format!(
                    "{name_says}; using {a} of {}, the default route's interface",
                    r.interface
                ),
            }),
            None => Err(format!(
                "{name_says}, and {}, the default route's interface, has no usable IPv4 \
                 address: pass --ip with this host's address",
                r.interface
            )),
        },
        None => Err(format!(
            "{name_says}, and there is no default route: pass --ip with this host's address"
        )),
    }
}

/// What the resolver (`/etc/hosts`, then DNS) says for the name.
fn resolve(hostname: &str) -> Result<Vec<IpAddr>, String> {
    (hostname, 0u16)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .map_err(|e| e.to_string())
}

/// The default route from the kernel, or None (no default route, no `/proc`, or no
/// interface list: the caller then asks for `--ip`).
pub fn default_route() -> Option<Route> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = default_interface(&text)?;
    let all = ipv4_addresses().ok()?;
    Some(Route {
        addrs: addresses_of(&all, &interface),
        interface,
    })
}

/// The interface of the IPv4 default route in `/proc/net/route` text: destination
/// and mask 0, flag RTF_UP set; the lowest metric wins, as it does in the kernel.
pub fn default_interface(proc_net_route: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
            let (iface, dest, flags, mask) = (*f.first()?, hex(1)?, hex(3)?, hex(7)?);
            let metric: u32 = f.get(6)?.parse().ok()?;
            (dest == 0 && mask == 0 && flags & RTF_UP != 0).then_some((metric, iface))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface.to_string())
}

/// The IPv4 addresses of `interface`, in the kernel's order (the primary one first).
pub fn addresses_of(all: &[(String, Ipv4Addr)], interface: &str) -> Vec<Ipv4Addr> {
    all.iter()
        .filter(|(name, _)| name == interface)
        .map(|(_, a)| *a)
        .collect()
}

/// Every interface's IPv4 addresses, from `getifaddrs(3)`.
pub fn ipv4_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs only writes the list's head into `head`; on success the list
    // is ours until the freeifaddrs below, which runs exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, alive until
        // freeifaddrs; nothing borrowed from it outlives this iteration.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_addr is non-null and points at a sockaddr of the list; its
            // family field is valid whatever the family.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in; read unaligned,
                // as the C library promises no alignment for the Rust type.
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a non-null, NUL-terminated string of the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                out.push((name.to_string_lossy().into_owned(), ip));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from the successful getifaddrs above and is freed once; the
    // loop above copied everything it needed out of the list.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE_HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn usable_addresses() {
        for (addr, ok) in [
            ("10.0.0.5", true),
            ("192.0.2.2", true),
            ("172.17.0.1", true),
            ("2001:db8::5", true),
            ("fd00::5", true),
            ("127.0.0.1", false),
            ("127.0.1.1", false),
            ("0.0.0.0", false),
            ("169.254.3.4", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("::1", false),
            ("::", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("::ffff:127.0.1.1", false),
            ("::ffff:10.0.0.5", true),
        ] {
            assert_eq!(usable(ip(addr)), ok, "{addr}");
        }
    }

    #[test]
    fn choosing_among_the_names_addresses() {
        for (addrs, want) in [
            (&[][..], None),
            (&["127.0.1.1"][..], None),
            (&["127.0.1.1", "::1"], None),
            (&["10.0.0.5"], Some("10.0.0.5")),
            (&["127.0.1.1", "10.0.0.5"], Some("10.0.0.5")),
            (&["2001:db8::5", "10.0.0.5"], Some("10.0.0.5")),
            (&["fe80::1", "2001:db8::5"], Some("2001:db8::5")),
            (&["169.254.1.1", "fe80::1", "0.0.0.0"], None),
        ] {
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
            assert_eq!(choose(&addrs), want.map(ip), "{addrs:?}");
        }
    }

    #[test]
    fn default_route_from_proc_net_route() {
        let table = |rows: &[&str]| format!("{ROUTE_HEADER}\n{}\n", rows.join("\n"));
        for (rows, want) in [
            (
                // This machine's: the default route, then on-link subnets.
                &[
                    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0",
                    "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0",
                    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
                ][..],
                Some("eth0"),
            ),
            (
                &["docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0"][..],
                None,
            ),
            (
                // Two defaults: the lower metric is the one in use.
                &[
                    "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0",
                    "enp3s0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0",
                ],
                Some("enp3s0"),
            ),
            (
                // A route that is not up does not count.
                &["eth1\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0"],
                None,
            ),
            (
                // A default without a gateway (point-to-point) counts.
                &["wg0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0"],
                Some("wg0"),
            ),
            (&["garbage", "eth0 zz 0 0003 0 0 0 00000000", ""], None),
            (&[], None),
        ] {
            assert_eq!(default_interface(&table(rows)).as_deref(), want, "{rows:?}");
        }
        assert_eq!(default_interface(""), None);
    }

    #[test]
    fn addresses_of_one_interface() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let all = vec![
            ("lo".to_string(), a("127.0.0.1")),
            ("eth0".to_string(), a("192.0.2.2")),
            ("docker0".to_string(), a("172.17.0.1")),
            ("eth0".to_string(), a("192.0.2.9")),
        ];
        assert_eq!(
            addresses_of(&all, "eth0"),
            vec![a("192.0.2.2"), a("192.0.2.9")]
        );
        assert!(addresses_of(&all, "eth9").is_empty());
    }

    #[test]
    fn decisions() {
        let route = |iface: &str, addrs: &[&str]| Route {
            interface: iface.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let ok = |addrs: &[&str]| Ok(addrs.iter().map(|a| ip(a)).collect::<Vec<_>>());
        for (resolved, route, want) in [
            (
                ok(&["10.0.0.5"]),
                None,
                Ok(("10.0.0.5", "host name \"n1\" resolves to 10.0.0.5")),
            ),
            (
                // Debian's /etc/hosts.
                ok(&["127.0.1.1"]),
                Some(route("eth0", &["192.0.2.2"])),
                Ok((
                    "192.0.2.2",
                    "host name \"n1\" resolves to 127.0.1.1 (loopback); using 192.0.2.2 of \
                     eth0, the default route's interface",
                )),
            ),
            (
                Err("failed to lookup address information".to_string()),
                Some(route("eth0", &["169.254.0.9", "192.0.2.2"])),
                Ok((
                    "192.0.2.2",
                    "cannot resolve host name \"n1\" (failed to lookup address information); \
                     using 192.0.2.2 of eth0, the default route's interface",
                )),
            ),
            (
                ok(&["127.0.1.1", "fe80::1"]),
                None,
                Err(
                    "host name \"n1\" resolves to 127.0.1.1 (loopback), fe80::1 (link-local), \
                     and there is no default route: pass --ip with this host's address",
                ),
            ),
            (
                ok(&[]),
                Some(route("tun0", &[])),
                Err(
                    "host name \"n1\" resolves to nothing, and tun0, the default route's \
                     interface, has no usable IPv4 address: pass --ip with this host's address",
                ),
            ),
        ] {
            let got = decide("n1", &resolved, || route)
                .map(|h| (h.ip.to_string(), h.why))
                .map_err(|e| e.to_string());
            let want = want
                .map(|(a, w)| (a.to_string(), w.to_string()))
                .map_err(|e| e.to_string());
            assert_eq!(got, want, "{resolved:?}");
        }
        let route_unread = || -> Option<Route> { panic!("the kernel is read only when needed") };
        assert!(decide("n1", &ok(&["10.0.0.5"]), route_unread).is_ok());
    }

    /// The real kernel: this machine's default route, if it has one, yields a usable
    /// address of that interface; and `localhost` never yields a loopback address.
    #[test]
    fn the_real_kernel() {
        let all = ipv4_addresses().expect("getifaddrs");
        assert!(
            all.iter().any(|(_, a)| a.is_loopback()),
            "lo is listed: {all:?}"
        );
        let text = std::fs::read_to_string("/proc/net/route").expect("/proc/net/route");
        let route = default_route();
        assert_eq!(
            route.as_ref().map(|r| r.interface.clone()),
            default_interface(&text)
        );
        let got = host_address("localhost");
        eprintln!("localhost -> {got:?}");
        match got {
            Ok(h) => {
                assert!(usable(h.ip), "{h}");
                let r = route.expect("an address other than the name's needs a route");
                assert!(r.addrs.contains(&match h.ip {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => panic!("the fallback is IPv4: {h}"),
                }));
                assert!(h.why.contains("the default route's interface"), "{h}");
            }
            Err(e) => assert!(e.ends_with("pass --ip with this host's address"), "{e}"),
        }
    }
}
