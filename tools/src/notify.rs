//! systemd readiness notification (`Type=notify` units), like etcd's
//! `daemon.SdNotify(false, "READY=1")`.
//!
//! When `$NOTIFY_SOCKET` is set, the state string is sent as one datagram to
//! that Unix socket: a filesystem path, or an abstract socket when it starts
//! with `@`.  Without `$NOTIFY_SOCKET` nothing is sent (not an error).

use std::io;
use std::os::unix::net::UnixDatagram;

use serde_json::json;

use crate::logging;

/// Sends `state` (e.g. `"READY=1"`) to the socket named by `notify_socket`
/// (the value of `$NOTIFY_SOCKET`).  Returns `Ok(false)` when there is no
/// socket to notify, `Ok(true)` once the datagram was sent.
pub fn notify_to(notify_socket: Option<&str>, state: &str) -> io::Result<bool> {
    let Some(path) = notify_socket.filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        send_abstract(&sock, name.as_bytes(), state)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets are only supported on Linux",
    ))
}

/// `sd_notify(state)` using `$NOTIFY_SOCKET` from the environment.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let var = std::env::var_os("NOTIFY_SOCKET");
    let path = var.as_ref().map(|v| v.to_string_lossy().into_owned());
    notify_to(path.as_deref(), state)
}

/// What etcd does once it serves clients: logs `notifying init daemon`,
/// sends `READY=1`, then logs `successfully notified init daemon` (also when
/// there is no `$NOTIFY_SOCKET`, as etcd does) or
/// `failed to notify systemd for readiness` with the error.
pub fn notify_ready() {
    logging::info("notifying init daemon", &[]);
    match sd_notify("READY=1") {
        Ok(_) => logging::info("successfully notified init daemon", &[]),
        Err(e) => logging::error(
            "failed to notify systemd for readiness",
            &[("error", json!(e.to_string()))],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ferrocd-notify-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sends_ready_to_path_socket() {
        let dir = temp_dir("path");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sent = notify_to(Some(path.to_str().unwrap()), "READY=1").unwrap();
        assert!(sent);
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_ready_to_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ferrocd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(notify_to(Some(&format!("@{name}")), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn no_socket_is_not_an_error() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(""), "READY=1").unwrap());
    }

    #[test]
    fn missing_socket_is_an_error() {
        let dir = temp_dir("missing");
        let path = dir.join("nobody.sock");
        assert!(notify_to(Some(path.to_str().unwrap()), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
