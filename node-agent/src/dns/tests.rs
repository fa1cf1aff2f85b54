use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::Query;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;

use super::*;

/// Answers every query with 192.0.2.77 (TTL 60), counting the calls; or fails.
struct FakeUpstream {
    calls: AtomicUsize,
    fail: bool,
}

impl Upstream for FakeUpstream {
    fn exchange(&self, query: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, std::io::Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.fail {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let q = Message::from_vec(&query).expect("a query");
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.queries = q.queries.clone();
            r.answers.push(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 77))),
            ));
            Ok(r.to_vec().expect("encode"))
        })
    }
}

fn resolver(fail: bool) -> Resolver<FakeUpstream> {
    let r = Resolver::new(
        "cluster.local",
        FakeUpstream {
            calls: AtomicUsize::new(0),
            fail,
        },
    );
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}
    }))
    .expect("service");
    r.set_zone(Zone::build("cluster.local", [&svc], []));
    r
}

fn ask(name: &str, t: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    m.to_vec().expect("encode")
}

async fn answer<U: Upstream>(r: &Resolver<U>, name: &str, t: RecordType) -> Message {
    let bytes = r.answer(&ask(name, t, 4242)).await.expect("an answer");
    let m = Message::from_vec(&bytes).expect("decode");
    assert_eq!(m.metadata.id, 4242);
    m
}

#[tokio::test]
async fn cluster_names_answer_authoritatively() {
    let r = resolver(false);
    let m = answer(&r, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 96, 0, 20))));
    assert_eq!(m.answers[0].ttl, 5);
    // No IPv6 address: an empty answer with the SOA, not an error.
    let m = answer(&r, "web.shop.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.authorities.len() == 1);
    let m = answer(&r, "nope.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.upstream.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn other_names_are_forwarded_once_then_cached() {
    let r = resolver(false);
    for id in [1, 2] {
        let bytes = r
            .answer(&ask("example.com.", RecordType::A, id))
            .await
            .expect("answer");
        let m = Message::from_vec(&bytes).expect("decode");
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(192, 0, 2, 77))));
    }
    assert_eq!(r.upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failures_are_servfail() {
    let r = resolver(true);
    let m = answer(&r, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // Before the first zone, the cluster's names are not known yet.
    let fresh = Resolver::new(
        "cluster.local",
        FakeUpstream {
            calls: AtomicUsize::new(0),
            fail: false,
        },
    );
    let m = answer(&fresh, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // Garbage gets no answer.
    assert!(fresh.answer(b"\x00\x01junk").await.is_none());
}

#[test]
fn big_udp_answers_are_truncated() {
    let request = ask("db.shop.svc.cluster.local.", RecordType::A, 7);
    let mut m = Message::response(7, OpCode::Query);
    for i in 0..60u8 {
        m.answers.push(Record::from_rdata(
            Name::from_ascii("db.shop.svc.cluster.local.").expect("name"),
            5,
            RData::A(A(Ipv4Addr::new(10, 88, 1, i))),
        ));
    }
    let big = m.to_vec().expect("encode");
    assert!(big.len() > 512);
    let fitted = Message::from_vec(&fit_udp(&request, big)).expect("decode");
    assert!(fitted.metadata.truncation);
    assert!(fitted.answers.is_empty());
}

#[tokio::test]
async fn external_names_come_with_their_targets_addresses() {
    let r = Resolver::new(
        "cluster.local",
        FakeUpstream {
            calls: AtomicUsize::new(0),
            fail: false,
        },
    );
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "www.example.com"}
    }))
    .expect("service");
    r.set_zone(Zone::build("cluster.local", [&svc], []));
    let m = answer(&r, "ext.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.answers.len(), 2, "{m:?}");
    assert!(matches!(m.answers[0].data, RData::CNAME(_)));
    assert_eq!(m.answers[1].data, RData::A(A(Ipv4Addr::new(192, 0, 2, 77))));
    // Asked for the CNAME itself: no chase.
    let m = answer(&r, "ext.shop.svc.cluster.local.", RecordType::CNAME).await;
    assert_eq!(m.answers.len(), 1);
}
