//! Fault-injecting TCP proxies for the peer traffic of a test cluster.
//!
//! Every member advertises a proxy's port as its peer URL (the address in
//! `--initial-cluster`) and listens on another port behind it, so every
//! member-to-member connection passes through the proxy of the member it
//! connects to. The test can then cut and heal the link between any two
//! members, in either of two ways:
//!
//! * [`Mode::Refuse`]: existing connections between them are closed, new
//!   ones are accepted and closed at once (a crashed host, a firewall
//!   sending RSTs);
//! * [`Mode::Blackhole`]: connections stay open but no byte moves in either
//!   direction until the link heals, new ones are accepted and held the same
//!   way (packets silently dropped; TCP delivers what was sent once the
//!   network is back, like retransmission after a short outage).
//!
//! Which member opened an accepted connection is found from the kernel, not
//! from the protocol: the connecting socket's inode in `/proc/net/tcp`
//! (matched by its loopback source port) and the member process whose
//! `/proc/<pid>/fd` holds it. So the proxies work for any server binary
//! (ferrocd and real etcd alike) and need every member's pid
//! ([`Net::set_pid`]). A connection whose opener is not a known member is
//! treated as coming from outside: it passes only while its target has no
//! cut link at all.
//!
//! Links are symmetric: cutting (a, b) stops traffic both ways on
//! connections opened by either side. Only loopback ports are used.

use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Refuse,
    Blackhole,
}

struct Conn {
    from: Option<usize>,
    to: usize,
    /// Clones of both sockets, to shut them down from outside the pumps.
    down: TcpStream,
    up: TcpStream,
    alive: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    pids: Vec<Option<u32>>,
    /// Cut links as (min, max) pairs, with how they were cut.
    cut: HashSet<(usize, usize)>,
    mode: Option<Mode>,
    conns: Vec<Conn>,
}

impl State {
    fn blocked(&self, from: Option<usize>, to: usize) -> bool {
        match from {
            Some(f) => self.cut.contains(&(f.min(to), f.max(to))),
            None => self.cut.iter().any(|&(a, b)| a == to || b == to),
        }
    }
}

struct Inner {
    state: Mutex<State>,
    stop: AtomicBool,
}

/// The proxies of one cluster: member `i`'s peers reach it at
/// [`Net::advertised_port`]`(i)`, and it must listen on
/// [`Net::listen_port`]`(i)`.
pub struct Net {
    inner: Arc<Inner>,
    ports: Vec<(u16, u16)>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Net {
    /// Proxies for `n` members; `port()` allocates a port (the caller decides
    /// from which range: members that restart need stable ones).
    pub fn start(n: usize, mut port: impl FnMut() -> u16) -> Net {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                pids: vec![None; n],
                ..State::default()
            }),
            stop: AtomicBool::new(false),
        });
        let mut ports = Vec::new();
        let mut threads = Vec::new();
        for to in 0..n {
            let (listener, front) = loop {
                let p = port();
                if let Ok(l) = TcpListener::bind(("127.0.0.1", p)) {
                    break (l, p);
                }
            };
            let back = port();
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            let inner2 = inner.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("proxy-{to}"))
                    .spawn(move || accept_loop(inner2, listener, front, back, to))
                    .expect("spawn proxy thread"),
            );
            ports.push((front, back));
        }
        Net {
            inner,
            ports,
            threads,
        }
    }

    pub fn advertised_port(&self, i: usize) -> u16 {
        self.ports[i].0
    }

    pub fn listen_port(&self, i: usize) -> u16 {
        self.ports[i].1
    }

    /// The pid of member `i`'s current process (`None` while it is down).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.inner.state.lock().unwrap().pids[i] = pid;
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn cut(&self, a: usize, b: usize, mode: Mode) {
        assert_ne!(a, b);
        let mut st = self.inner.state.lock().unwrap();
        if let Some(m) = st.mode {
            assert_eq!(m, mode, "all cut links of a Net use one mode at a time");
        }
        st.mode = Some(mode);
        st.cut.insert((a.min(b), a.max(b)));
        if mode == Mode::Refuse {
            let pair = (a.min(b), a.max(b));
            for c in &st.conns {
                let hit = match c.from {
                    Some(f) => (f.min(c.to), f.max(c.to)) == pair,
                    None => c.to == a || c.to == b,
                };
                if hit {
                    let _ = c.down.shutdown(Shutdown::Both);
                    let _ = c.up.shutdown(Shutdown::Both);
                }
            }
        }
    }

    /// Cuts every link of member `i`.
    pub fn isolate(&self, i: usize, mode: Mode) {
        for j in 0..self.ports.len() {
            if j != i {
                self.cut(i, j, mode);
            }
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        let mut st = self.inner.state.lock().unwrap();
        st.cut.clear();
        st.mode = None;
    }

    /// Live proxied connections as (opener, target), for diagnostics.
    pub fn connections(&self) -> Vec<(Option<usize>, usize)> {
        let mut st = self.inner.state.lock().unwrap();
        st.conns.retain(|c| c.alive.load(Ordering::Relaxed));
        st.conns.iter().map(|c| (c.from, c.to)).collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        {
            let st = self.inner.state.lock().unwrap();
            for c in &st.conns {
                let _ = c.down.shutdown(Shutdown::Both);
                let _ = c.up.shutdown(Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener, front: u16, back: u16, to: usize) {
    while !inner.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((down, addr)) => {
                let _ = down.set_nonblocking(false);
                let pids = inner.state.lock().unwrap().pids.clone();
                let from = opener(addr, front, &pids);
                handle(&inner, down, from, to, back);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn handle(inner: &Arc<Inner>, down: TcpStream, from: Option<usize>, to: usize, back: u16) {
    {
        let st = inner.state.lock().unwrap();
        if st.blocked(from, to) && st.mode == Some(Mode::Refuse) {
            let _ = down.shutdown(Shutdown::Both);
            return;
        }
    }
    // The member behind may be down: then close, as it would.
    let Ok(up) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], back)),
        Duration::from_secs(1),
    ) else {
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    let alive = Arc::new(AtomicBool::new(true));
    let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) = (
        down.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    {
        let mut st = inner.state.lock().unwrap();
        st.conns.retain(|c| c.alive.load(Ordering::Relaxed));
        st.conns.push(Conn {
            from,
            to,
            down: d3,
            up: u3,
            alive: alive.clone(),
        });
    }
    for (src, dst) in [(down, u2), (up, d2)] {
        let inner = inner.clone();
        let alive = alive.clone();
        let _ = thread::Builder::new()
            .name("proxy-pump".into())
            .spawn(move || pump(inner, src, dst, from, to, alive));
    }
}

/// Copies `src` to `dst` while the link is up; holds the bytes while it is
/// blackholed; on EOF or error shuts both sockets so the other pump ends too.
fn pump(
    inner: Arc<Inner>,
    mut src: TcpStream,
    mut dst: TcpStream,
    from: Option<usize>,
    to: usize,
    alive: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Blackholed: hold the bytes until the link heals (or the proxy
        // stops, or a Refuse cut shuts the sockets).
        loop {
            if inner.stop.load(Ordering::Relaxed) {
                break;
            }
            let blocked = {
                let st = inner.state.lock().unwrap();
                st.blocked(from, to)
            };
            if !blocked {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        if inner.stop.load(Ordering::Relaxed) || dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
    alive.store(false, Ordering::Relaxed);
}

/// Which member opened the connection that arrived from `addr` at our port
/// `front`: the inode of its socket from /proc/net/tcp, then the member
/// process holding that inode.
fn opener(addr: SocketAddr, front: u16, pids: &[Option<u32>]) -> Option<usize> {
    let inode = socket_inode(addr.port(), front)?;
    let want = format!("socket:[{inode}]");
    for (i, pid) in pids.iter().enumerate() {
        let Some(pid) = pid else { continue };
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(i);
            }
        }
    }
    None
}

/// The inode of the loopback socket with local port `local` connected to
/// remote port `remote` (`/proc/net/tcp`: `sl local rem st ... uid timeout
/// inode`, addresses as `HEXIP:HEXPORT`).
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let text = fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!("0100007F:{local:04X}");
    let want_remote = format!("0100007F:{remote:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::free_port;
    use std::io::BufRead;

    /// An echo server standing in for member 1; member 0 is this test
    /// process itself (its pid is registered), so its connections through
    /// the proxy are attributed to member 0.
    #[test]
    fn proxy_attributes_cuts_and_heals() {
        let net = Net::start(2, free_port);
        net.set_pid(0, Some(std::process::id()));
        let echo = TcpListener::bind(("127.0.0.1", net.listen_port(1))).unwrap();
        thread::spawn(move || {
            for s in echo.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 {
                        if w.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        let connect = || {
            let s = TcpStream::connect(("127.0.0.1", net.advertised_port(1))).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        };
        let roundtrip = |s: &mut TcpStream, msg: &str| -> Option<String> {
            s.write_all(format!("{msg}\n").as_bytes()).ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).trim().to_string())
        };

        let mut a = connect();
        assert_eq!(roundtrip(&mut a, "hello").as_deref(), Some("hello"));
        assert_eq!(net.connections(), vec![(Some(0), 1)]);

        // Blackhole: nothing comes back while cut; held bytes arrive after
        // the heal.
        net.cut(0, 1, Mode::Blackhole);
        assert_eq!(roundtrip(&mut a, "held"), None);
        net.heal();
        let mut buf = [0u8; 64];
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = a.read(&mut buf).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "held");

        // Refuse: the live connection is closed, new ones too; heal
        // restores service for new connections.
        net.cut(1, 0, Mode::Refuse);
        assert_eq!(roundtrip(&mut a, "gone"), None);
        let mut b = connect();
        assert_eq!(roundtrip(&mut b, "refused"), None);
        net.heal();
        let mut c = connect();
        assert_eq!(roundtrip(&mut c, "back").as_deref(), Some("back"));

        // A connection from an unknown process (member 0 forgotten) passes
        // only while member 1 has no cut link.
        net.set_pid(0, None);
        let mut d = connect();
        assert_eq!(roundtrip(&mut d, "stranger").as_deref(), Some("stranger"));
        assert!(net.connections().contains(&(None, 1)));
    }
}
