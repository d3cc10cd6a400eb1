//! The node's supervision tree as an operator sees it: stable paths, restart
//! counts, and subtree restarts that leave the broker serving.

mod common;

use common::{eventually, Broker, Raw};
use roost_protocol::packet::{Packet, ProtocolVersion, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn tree_has_the_documented_paths() {
    let b = Broker::start().await;
    let tree = b.node().tree().await.unwrap();
    for path in [
        "storage",
        "broker",
        "broker/router",
        "broker/retainer",
        "broker/sessions",
        "bridges",
        "alarms",
        "listeners",
        "listeners/tcp:default",
        "cluster",
        "cluster/forwarder",
        "cluster/ingress",
        "cluster/takeover",
        "cluster/membership",
    ] {
        let n = tree
            .find(path)
            .unwrap_or_else(|| panic!("no {path} in {tree:#?}"));
        assert_eq!(n.status, "running", "{path}");
        assert_eq!(n.restarts, 0, "{path}");
    }
    assert_eq!(tree.find("broker").unwrap().kind, "supervisor");
    assert_eq!(tree.find("broker/router").unwrap().kind, "worker");
    assert_eq!(tree.find("storage").unwrap().kind, "worker");
    b.stop().await;
}

#[tokio::test]
async fn restarting_the_router_restarts_sessions_and_clients_recover() {
    let b = Broker::start().await;
    let (mut sub, _) = Raw::connect(b.addr, V5, "sub", true).await;
    sub.subscribe(1, "a/#", QoS::AtMostOnce).await;

    b.node().restart("broker/router").await.unwrap();

    // rest_for_one: the sessions after the router restart too, so the old
    // connection is closed (its session is gone) ...
    sub.expect_closed().await;
    let tree_ok = eventually(|| async {
        let t = b.node().tree().await.unwrap();
        let router = t.find("broker/router").unwrap();
        let sessions = t.find("broker/sessions").unwrap();
        router.restarts == 1
            && sessions.restarts == 1
            && router.status == "running"
            && sessions.status == "running"
    })
    .await;
    assert!(tree_ok, "{:#?}", b.node().tree().await.unwrap());
    // ... the listener is untouched, and a reconnecting client gets a working
    // broker with a route table rebuilt from live subscriptions.
    assert_eq!(
        b.node()
            .tree()
            .await
            .unwrap()
            .find("listeners/tcp:default")
            .unwrap()
            .restarts,
        0
    );
    let (mut sub, _) = Raw::connect(b.addr, V5, "sub", true).await;
    sub.subscribe(1, "a/#", QoS::AtMostOnce).await;
    let (mut publ, _) = Raw::connect(b.addr, V5, "pub", true).await;
    publ.publish("a/b", b"after", QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"after");
    assert_eq!(b.node().ctx().routes.subscription_count(), 1);
    b.stop().await;
}

#[tokio::test]
async fn restart_of_unknown_or_root_path_is_refused() {
    let b = Broker::start().await;
    assert!(b.node().restart("no/such/path").await.is_err());
    assert!(b.node().restart("").await.is_err());
    // The broker is unaffected.
    let (mut c, _) = Raw::connect(b.addr, V5, "c", true).await;
    c.send(Packet::PingReq).await;
    assert!(matches!(c.recv().await, Some(Packet::PingResp)));
    b.stop().await;
}
