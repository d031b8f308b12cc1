//! The Election service's server-streaming Observe (no etcdctl command
//! calls it: `etcdctl elect -l` observes on the client), driven by a raw
//! HTTP/2 client against an in-process server: no leader yet (waits for the
//! first campaign), proclaims of the leader, and the next leader after a
//! resign, with the header revisions etcd's `Election.Observe` reports.

use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::sleep;
use glommio::LocalExecutorBuilder;
use http::Request;
use prost::Message;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::support::TestServer;
use net::client::Client;
use net::pb::etcdserverpb as pb;
use net::pb::v3electionpb as epb;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    future::or(async { Some(f.await) }, async {
        sleep(Duration::from_secs(15)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// One Observe call: the request sent, responses read frame by frame.
struct Observe {
    resp: Option<h2::client::ResponseFuture>,
    rx: Option<h2::RecvStream>,
    buf: Vec<u8>,
}

impl Observe {
    async fn open(addr: std::net::SocketAddr, name: &str) -> Observe {
        let tcp = glommio::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let (h2, conn) = h2::client::handshake(tcp.compat()).await.expect("h2");
        glommio::spawn_local(async move {
            let _ = conn.await;
        })
        .detach();
        let req = Request::builder()
            .method("POST")
            .uri("http://localhost/v3electionpb.Election/Observe")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut h2 = h2.ready().await.expect("ready");
        let (resp, mut tx) = h2.send_request(req, false).expect("send");
        let body = epb::LeaderRequest {
            name: name.as_bytes().to_vec(),
        }
        .encode_to_vec();
        let mut f = vec![0u8];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        tx.send_data(Bytes::from(f), true).expect("send");
        Observe {
            resp: Some(resp),
            rx: None,
            buf: Vec::new(),
        }
    }

    async fn recv(&mut self) -> epb::LeaderResponse {
        within("observe response", async {
            loop {
                if self.buf.len() >= 5 {
                    let len =
                        u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                            as usize;
                    if self.buf.len() >= 5 + len {
                        let msg: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
                        return epb::LeaderResponse::decode(msg.as_slice()).expect("response");
                    }
                }
                if self.rx.is_none() {
                    let resp = self.resp.take().expect("response future").await;
                    self.rx = Some(resp.expect("response headers").into_body());
                }
                let rx = self.rx.as_mut().expect("body");
                let chunk = rx.data().await.expect("stream open").expect("data");
                let _ = rx.flow_control().release_capacity(chunk.len());
                self.buf.extend_from_slice(&chunk);
            }
        })
        .await
    }
}

fn seen(r: &epb::LeaderResponse) -> (String, String, i64) {
    let kv = r.kv.clone().expect("kv");
    (
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
        r.header.as_ref().expect("header").revision,
    )
}

#[test]
fn observe_follows_campaigns_proclaims_and_resigns() {
    let srv = TestServer::start();
    let addr = srv.addr;
    let ep = srv.endpoint();
    LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .spawn(move || async move {
            let c = Client::connect(&ep).await.expect("connect");
            let grant = |c: Client| async move {
                let g: pb::LeaseGrantResponse = c
                    .unary(
                        "/etcdserverpb.Lease/LeaseGrant",
                        &pb::LeaseGrantRequest { ttl: 60, id: 0 },
                    )
                    .await
                    .expect("grant");
                g.id
            };
            let l1 = grant(c.clone()).await;
            let l2 = grant(c.clone()).await;
            // No leader yet: Observe waits for the first campaign.
            let mut ob = Observe::open(addr, "ob").await;
            sleep(Duration::from_millis(200)).await;
            let campaign = |lease: i64, v: &str| epb::CampaignRequest {
                name: b"ob".to_vec(),
                lease,
                value: v.as_bytes().to_vec(),
            };
            let r: epb::CampaignResponse = c
                .unary("/v3electionpb.Election/Campaign", &campaign(l1, "a"))
                .await
                .expect("campaign");
            let leader = r.leader.clone().expect("leader key");
            let k1 = format!("ob/{l1:x}");
            assert_eq!(String::from_utf8_lossy(&leader.key), k1);
            let rev1 = r.header.expect("header").revision;
            assert_eq!(seen(&ob.recv().await), (k1.clone(), "a".into(), rev1));
            // A proclaim shows up with its revision.
            let p: epb::ProclaimResponse = c
                .unary(
                    "/v3electionpb.Election/Proclaim",
                    &epb::ProclaimRequest {
                        leader: Some(leader.clone()),
                        value: b"b".to_vec(),
                    },
                )
                .await
                .expect("proclaim");
            let rev2 = p.header.expect("header").revision;
            assert_eq!(seen(&ob.recv().await), (k1.clone(), "b".into(), rev2));
            // A second candidate waits; after the resign it leads.
            let c2 = c.clone();
            let second = glommio::spawn_local(async move {
                let r: epb::CampaignResponse = c2
                    .unary("/v3electionpb.Election/Campaign", &campaign(l2, "c"))
                    .await
                    .expect("second campaign");
                r
            });
            sleep(Duration::from_millis(200)).await;
            let rs: epb::ResignResponse = c
                .unary(
                    "/v3electionpb.Election/Resign",
                    &epb::ResignRequest {
                        leader: Some(leader),
                    },
                )
                .await
                .expect("resign");
            let rev4 = rs.header.expect("header").revision;
            let r2 = within("second campaign", second).await;
            let k2 = format!("ob/{l2:x}");
            assert_eq!(String::from_utf8_lossy(&r2.leader.expect("leader").key), k2);
            // etcd re-reads the first key by create revision after the
            // delete: the header is that read's (the resign's revision).
            assert_eq!(seen(&ob.recv().await), (k2, "c".into(), rev4));
            let leader: epb::LeaderResponse = c
                .unary(
                    "/v3electionpb.Election/Leader",
                    &epb::LeaderRequest {
                        name: b"ob".to_vec(),
                    },
                )
                .await
                .expect("leader");
            assert_eq!(seen(&leader).1, "c");
        })
        .expect("executor")
        .join()
        .expect("test body");
    drop(srv);
}
