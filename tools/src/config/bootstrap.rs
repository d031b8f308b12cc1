//! Member and cluster IDs computed exactly like etcd 3.5, and the checks etcd
//! runs on `--initial-cluster` when a member bootstraps (etcd's
//! `ServerConfig.VerifyBootstrap` / `VerifyJoinExisting`), with etcd's texts.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};

use super::{ClusterState, Config, ConfigError, ErrorKind};
use crate::flags::goparse::{quote, quote_list};
use crate::flags::url::{new_urls_map, split_host_port, urls_map_string, GoUrl};

fn sha1_prefix(data: &[u8]) -> u64 {
    let digest = sha1_smol::Sha1::from(data).digest().bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// etcd's `computeMemberId` for a bootstrapping member: SHA-1 over the
/// member's peer URLs (canonical form, sorted, concatenated without separator)
/// followed by the cluster token; the ID is the first 8 bytes, big endian.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    member_id_at(peer_urls, token, None)
}

/// `computeMemberId` with the optional time etcd mixes in for members added
/// at runtime (`MemberAdd` passes the current Unix time in seconds).
pub fn member_id_at(peer_urls: &[String], token: &str, unix_secs: Option<i64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut data = urls.concat().into_bytes();
    data.extend_from_slice(token.as_bytes());
    if let Some(t) = unix_secs {
        data.extend_from_slice(t.to_string().as_bytes());
    }
    sha1_prefix(&data)
}

/// etcd's `RaftCluster.genID`: SHA-1 over the member IDs sorted ascending,
/// each as 8 big-endian bytes; the ID is the first 8 bytes, big endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let data: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_prefix(&data)
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapMember {
    pub name: String,
    pub id: u64,
    /// Canonical peer URLs, sorted.
    pub peer_urls: Vec<String>,
}

/// The cluster a new member bootstraps, as etcd computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Members sorted by ID.
    pub members: Vec<BootstrapMember>,
    /// This member's ID.
    pub local_member_id: u64,
    /// The cluster ID (for `--initial-cluster-state=existing` the real one
    /// comes from the running cluster; this is what the initial map gives).
    pub cluster_id: u64,
}

fn bootstrap_err(msg: impl Into<String>) -> ConfigError {
    ConfigError::new(ErrorKind::Bootstrap, msg)
}

/// Resolves a URL's host like etcd's `netutil.resolveURL`: `localhost`, IP
/// literals and unix sockets stay as they are, names are looked up.
fn resolve_url(u: &str) -> Result<String, String> {
    let mut parsed = GoUrl::parse(u).map_err(|e| format!("failed to parse {} ({e})", quote(u)))?;
    if parsed.scheme == "unix" || parsed.scheme == "unixs" {
        return Ok(u.to_string());
    }
    let (host, port) = split_host_port(&parsed.host)
        .map_err(|e| format!("failed to resolve {} ({e})", quote(u)))?;
    if host == "localhost" || host.parse::<IpAddr>().is_ok() {
        return Ok(u.to_string());
    }
    let port_num: u16 = if port.is_empty() {
        0
    } else {
        port.parse()
            .map_err(|_| format!("failed to resolve {} (invalid port {port})", quote(u)))?
    };
    let addrs: Vec<std::net::SocketAddr> = (host.as_str(), port_num)
        .to_socket_addrs()
        .map_err(|e| format!("failed to resolve {} ({e})", quote(u)))?
        .collect();
    let chosen = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .ok_or_else(|| format!("failed to resolve {} (no such host)", quote(u)))?;
    parsed.host = match chosen.ip() {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    Ok(parsed.to_go_string())
}

/// etcd's `netutil.URLStringsEqual` (both lists already sorted).
fn urls_equal(a: &[String], b: &[String]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("len({}) != len({})", quote_list(a), quote_list(b)));
    }
    let mut ra = a
        .iter()
        .map(|u| resolve_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rb = b
        .iter()
        .map(|u| resolve_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    ra.sort();
    rb.sort();
    for i in 0..ra.len() {
        if ra[i] != rb[i] {
            return Err(format!(
                "{}(resolved from {}) != {}(resolved from {})",
                quote(&ra[i]),
                quote(&a[i]),
                quote(&rb[i]),
                quote(&b[i])
            ));
        }
    }
    Ok(())
}

impl Config {
    /// `--initial-cluster` parsed into name → canonical, sorted peer URLs
    /// (etcd's `types.NewURLsMap`).  Error: `error setting up initial cluster: ...`.
    pub fn initial_cluster_map(&self) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
        new_urls_map(&self.initial_cluster)
            .map_err(|e| bootstrap_err(format!("error setting up initial cluster: {e}")))
    }

    /// What etcd does with `--initial-cluster` when a member starts without
    /// data: parses it, runs etcd's bootstrap checks (for state `new`:
    /// local name present, advertised peer URLs match, no duplicate URL; for
    /// `existing`: local name present, no duplicate URL) and computes the
    /// member and cluster IDs.  Errors carry etcd's exact texts and kind
    /// [`ErrorKind::Bootstrap`] (report: `failed to start etcd` +
    /// fatal `discovery failed`, exit 1).  Call it only for a fresh data dir;
    /// etcd ignores these flags once the member is initialized.
    pub fn bootstrap(&self) -> Result<Bootstrap, ConfigError> {
        let discovery = self.flags.get("discovery").as_str();
        let srv = self.flags.get("discovery-srv").as_str();
        if !discovery.is_empty() || !srv.is_empty() {
            return Err(ConfigError::new(
                ErrorKind::Unsupported,
                "cluster discovery (--discovery, --discovery-srv) is not supported by ferrocd yet; use --initial-cluster",
            ));
        }
        let map = self.initial_cluster_map()?;
        let Some(local_urls) = map.get(&self.name) else {
            return Err(bootstrap_err(format!(
                "couldn't find local name {} in the initial cluster configuration",
                quote(&self.name)
            )));
        };
        if self.initial_cluster_state == ClusterState::New {
            self.advertise_matches_cluster(local_urls)?;
        }
        let mut seen = std::collections::HashSet::new();
        if map.values().flatten().any(|u| !seen.insert(u.as_str())) {
            return Err(bootstrap_err(format!(
                "initial cluster {} has duplicate url",
                urls_map_string(&map)
            )));
        }
        if self.initial_cluster_state == ClusterState::New && urls_map_string(&map).is_empty() {
            return Err(bootstrap_err(
                "initial cluster unset and no discovery URL found",
            ));
        }
        let token = &self.initial_cluster_token;
        let mut members: Vec<BootstrapMember> = Vec::with_capacity(map.len());
        for (name, urls) in &map {
            let id = member_id(urls, token);
            if id == 0 {
                return Err(bootstrap_err("cannot use 0 as member id"));
            }
            if members.iter().any(|m| m.id == id) {
                return Err(bootstrap_err(format!(
                    "member exists with identical ID {id:x}"
                )));
            }
            members.push(BootstrapMember {
                name: name.clone(),
                id,
                peer_urls: urls.clone(),
            });
        }
        members.sort_by_key(|m| m.id);
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(Bootstrap {
            local_member_id: member_id(local_urls, token),
            cluster_id: cluster_id(&ids),
            members,
        })
    }

    /// etcd's `advertiseMatchesCluster`.
    fn advertise_matches_cluster(&self, local_urls: &[String]) -> Result<(), ConfigError> {
        let mut ap = self.initial_advertise_peer_urls.clone();
        ap.sort();
        let mut ic = local_urls.to_vec();
        ic.sort();
        let err = match urls_equal(&ap, &ic) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let name = &self.name;
        let ap_str = ap.join(",");
        let mut missing: Vec<String> = ic
            .iter()
            .filter(|u| !ap.contains(u))
            .map(|u| format!("{name}={u}"))
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(bootstrap_err(format!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={ap_str} ({err})",
                missing.join(",")
            )));
        }
        let mut own = BTreeMap::new();
        own.insert(name.clone(), ap.clone());
        let umap = urls_map_string(&own);
        let missing: Vec<String> = ap.iter().filter(|u| !ic.contains(u)).cloned().collect();
        if !missing.is_empty() {
            return Err(bootstrap_err(format!(
                "--initial-advertise-peer-urls has {} but missing from --initial-cluster={umap}",
                missing.join(",")
            )));
        }
        Err(bootstrap_err(format!(
            "failed to resolve {ap_str} to match --initial-cluster={umap} ({err})"
        )))
    }
}
