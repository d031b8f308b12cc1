//! A 3-member cluster (ferrocd, or real etcd 3.5.1 to validate a test's
//! expectations) whose peer traffic passes through the fault-injecting
//! proxies of [`crate::netfault`], with process faults: SIGKILL + restart
//! from the same data dir and ports, SIGSTOP / SIGCONT.
//!
//! Ports come from [`crate::crash::stable_port`] (outside the ephemeral
//! range), so a killed member gets its ports back on restart.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crash::stable_port;
use crate::harness::{
    etcdctl, etcdctl_with_timeouts, send_signal, spawn_server_env, strings, tail, wait_timeout,
    CtlOutput, Kind,
};
use crate::netfault::Net;

pub struct Member {
    pub name: String,
    pub client: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// `endpoint status` of one member.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub errors: Vec<String>,
}

pub struct FaultCluster {
    pub kind: Kind,
    pub net: Net,
    pub members: Vec<Member>,
    initial: String,
    pub root: PathBuf,
    /// Keep the data dirs, logs and histories even if the test passes.
    pub keep: bool,
    envs: Vec<(String, String)>,
    extra: Vec<String>,
}

impl FaultCluster {
    /// Starts 3 members of `kind`; `envs` go to every server process.
    pub fn start(kind: Kind, envs: &[(&str, &str)]) -> FaultCluster {
        Self::start_with(kind, envs, &[])
    }

    /// [`Self::start`] with extra server flags.
    pub fn start_with(kind: Kind, envs: &[(&str, &str)], extra: &[&str]) -> FaultCluster {
        let root = crate::harness::fresh_temp_dir(&format!("faults-{}", kind.label()));
        let net = Net::start(3, stable_port);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client: stable_port(),
                dir: root.join(format!("m{}", i + 1)),
                child: None,
                stopped: false,
            })
            .collect();
        let initial = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}=http://127.0.0.1:{}", m.name, net.advertised_port(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = FaultCluster {
            kind,
            net,
            members,
            initial,
            root,
            keep: false,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir).expect("member dir");
        let c = format!("http://127.0.0.1:{}", m.client);
        let listen = format!("http://127.0.0.1:{}", self.net.listen_port(i));
        let adv = format!("http://127.0.0.1:{}", self.net.advertised_port(i));
        let args = strings(&[
            "--name",
            &m.name,
            "--data-dir",
            &m.dir.join("data").display().to_string(),
            "--listen-client-urls",
            &c,
            "--advertise-client-urls",
            &c,
            "--listen-peer-urls",
            &listen,
            "--initial-advertise-peer-urls",
            &adv,
            "--initial-cluster",
            &self.initial,
            "--initial-cluster-token",
            "it-faults",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]);
        let mut args = args;
        args.extend(self.extra.iter().cloned());
        let child = spawn_server_env(
            self.kind.bin(),
            &args,
            &m.dir,
            &m.dir.join("server.log"),
            &self.envs,
        );
        self.net.set_pid(i, Some(child.id()));
        self.members[i].child = Some(child);
        self.members[i].stopped = false;
    }

    /// SIGKILL (resuming a stopped member is not needed: SIGKILL ends it).
    /// Panics if the member had died on its own.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("member not running");
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "member {i} died on its own before the kill: {st}\n{}",
                self.logs()
            );
        }
        send_signal(&child, libc::SIGKILL);
        wait_timeout(&mut child, Duration::from_secs(10)).expect("member survived SIGKILL");
        self.net.set_pid(i, None);
        self.members[i].stopped = false;
    }

    pub fn sigstop(&mut self, i: usize) {
        let child = self.members[i].child.as_ref().expect("member not running");
        send_signal(child, libc::SIGSTOP);
        self.members[i].stopped = true;
    }

    pub fn sigcont(&mut self, i: usize) {
        let child = self.members[i].child.as_ref().expect("member not running");
        send_signal(child, libc::SIGCONT);
        self.members[i].stopped = false;
    }

    /// Panics if a member that should be running has exited.
    pub fn assert_alive(&mut self) {
        for i in 0..self.members.len() {
            if let Some(c) = self.members[i].child.as_mut() {
                if let Some(st) = c.try_wait().unwrap() {
                    panic!("member {i} exited on its own: {st}\n{}", self.logs());
                }
            }
        }
    }

    pub fn ep(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client)
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "---- {} ({}) ----\n{}",
                    m.name,
                    m.dir.display(),
                    tail(&m.dir.join("server.log"), 30)
                )
            })
            .collect()
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> CtlOutput {
        etcdctl(Some(&self.ep(i)), &strings(args), None)
    }

    pub fn ctl_timeout(&self, i: usize, args: &[&str], timeout: &str) -> CtlOutput {
        etcdctl_with_timeouts(Some(&self.ep(i)), &strings(args), None, timeout, "2s")
    }

    pub fn status(&self, i: usize) -> Option<Status> {
        let out = self.ctl_timeout(i, &["endpoint", "status", "-w", "json"], "3s");
        if out.code != 0 {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let s = &v.get(0)?["Status"];
        Some(Status {
            id: s["header"]["member_id"].as_u64()?,
            // etcdctl's JSON omits zero fields (no leader: no "leader").
            leader: s["leader"].as_u64().unwrap_or(0),
            raft_index: s["raftIndex"].as_u64().unwrap_or(0),
            raft_term: s["raftTerm"].as_u64().unwrap_or(0),
            errors: s["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Waits until `live` agree on one leader among them and on the Raft
    /// index; returns the leader's position.
    pub fn wait_converged(&self, live: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            let st: Vec<_> = live.iter().map(|&i| self.status(i)).collect();
            if st.iter().all(Option::is_some) {
                let st: Vec<Status> = st.into_iter().flatten().collect();
                let leader = st[0].leader;
                let agreed = leader != 0
                    && st.iter().all(|s| s.leader == leader)
                    && st.iter().all(|s| s.raft_index == st[0].raft_index);
                let pos = st.iter().position(|s| s.id == leader);
                if let (true, Some(p)) = (agreed, pos) {
                    return live[p];
                }
                last = st;
            }
            assert!(
                Instant::now() < deadline,
                "members {live:?} did not converge within {timeout:?}; last statuses {last:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `endpoint hashkv` of member `i`: (hash, revision).
    pub fn hashkv(&self, i: usize) -> (u64, i64) {
        let out = self.ctl(i, &["endpoint", "hashkv", "-w", "json"]);
        assert_eq!(
            out.code,
            0,
            "hashkv on {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("hashkv json");
        (
            v[0]["HashKV"]["hash"].as_u64().expect("hash"),
            v[0]["HashKV"]["header"]["revision"].as_i64().unwrap_or(0),
        )
    }

    /// Waits until every member reports the same `endpoint hashkv` (and
    /// revision); panics with all of them otherwise.
    pub fn wait_same_hashkv(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let h: Vec<(u64, i64)> = (0..self.members.len()).map(|i| self.hashkv(i)).collect();
            if h.iter().all(|x| *x == h[0]) {
                return h[0].0;
            }
            assert!(
                Instant::now() < deadline,
                "endpoint hashkv differs between members: {h:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl FaultCluster {
    /// Sum of a Prometheus counter family over its labels in member `i`'s
    /// `/metrics` (plain HTTP/1.1 GET on the client port); 0 if absent.
    pub fn metric_sum(&self, i: usize, name: &str) -> f64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.members[i].client)) else {
            return 0.0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return 0.0;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(mut c) = self.members[i].child.take() {
                if self.members[i].stopped {
                    send_signal(&c, libc::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep
            || std::thread::panicking()
            || std::env::var_os("FERROCD_IT_KEEP_TMP").is_some()
        {
            eprintln!("[faults] kept {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
