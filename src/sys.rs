//! `$SYS` topics: the node's figures published as MQTT messages, the way
//! EMQX and Mosquitto do, for clients that cannot scrape Prometheus.
//!
//! Every `sys_interval` the `sys` actor takes the same snapshot `/metrics`
//! is encoded from (`mgmt::metrics::snapshot`) and publishes each sample as
//! one QoS 0, non-retained message:
//!
//! ```text
//! roost_<name>{<label>="<value>",...} <number>
//!   -> $SYS/brokers/<node>/<name>/<value>/...   payload "<number>"
//! ```
//!
//! e.g. `roost_sessions{status="offline"} 2` is published on
//! `$SYS/brokers/roost@host/sessions/offline` with payload `2`, and
//! `$SYS/brokers/<node>/version` carries the Roost version. Deriving the
//! topics from the Prometheus text keeps the two in agreement by
//! construction: a metric added to `/metrics` appears under `$SYS` too.
//! Label values that are not valid topic characters (`+`, `#`) are replaced
//! by `_`; a label value with `/` (a supervision path) spans several levels.
//!
//! The messages are routed like any other (a persistent subscriber queues
//! them) but not counted as received from a client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_actors::broker::dispatch;
use roost_protocol::packet::{PublishProperties, QoS};
use roost_protocol::{ClientId, Message};

use crate::mgmt::{metrics, AppState};

pub struct Sys;

pub struct SysArgs {
    pub app: AppState,
    pub interval: Duration,
}

pub enum SysMsg {
    Tick,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for SysMsg {}

pub struct SysState {
    app: AppState,
    timer: JoinHandle<()>,
}

impl Actor for Sys {
    type Msg = SysMsg;
    type State = SysState;
    type Arguments = SysArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SysMsg>,
        args: SysArgs,
    ) -> Result<SysState, ActorProcessingErr> {
        let timer = myself.send_interval(args.interval, || SysMsg::Tick);
        Ok(SysState {
            app: args.app,
            timer,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<SysMsg>,
        st: &mut SysState,
    ) -> Result<(), ActorProcessingErr> {
        st.timer.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SysMsg>,
        SysMsg::Tick: SysMsg,
        st: &mut SysState,
    ) -> Result<(), ActorProcessingErr> {
        let snapshot = metrics::snapshot(&st.app).await;
        let text = metrics::encode_snapshot(&snapshot);
        let ctx = &st.app.shared.ctx;
        let node = &st.app.shared.node_name;
        let version = (
            format!("$SYS/brokers/{}/version", topic_level(node)),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        for (topic, payload) in sys_messages(node, &text).into_iter().chain([version]) {
            dispatch(ctx, Arc::new(sys_message(topic, payload)));
        }
        Ok(())
    }
}

fn sys_message(topic: String, payload: String) -> Message {
    Message {
        id: roost_protocol::MessageId::NONE,
        topic: topic.into(),
        payload: Bytes::from(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        publisher: ClientId::new(""),
        properties: PublishProperties::default(),
        expires_at: None,
    }
}

/// (topic, payload) of every sample of an OpenMetrics text.
pub fn sys_messages(node: &str, text: &str) -> Vec<(String, String)> {
    let prefix = format!("$SYS/brokers/{}", topic_level(node));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let name = name.strip_prefix("roost_").unwrap_or(name);
            let mut topic = format!("{prefix}/{name}");
            for value in label_values(labels) {
                topic.push('/');
                topic.push_str(&value.replace(['+', '#'], "_"));
            }
            Some((topic, value.to_owned()))
        })
        .collect()
}

/// The values of `k="v",k2="v2"` in order (values never contain `"` here:
/// they are listener names, statuses, reasons, kinds and paths).
fn label_values(labels: &str) -> Vec<&str> {
    labels
        .split("\",")
        .filter_map(|pair| {
            let (_, v) = pair.split_once("=\"")?;
            Some(v.trim_end_matches('"'))
        })
        .collect()
}

/// A node name as one topic level.
fn topic_level(node: &str) -> String {
    node.replace(['/', '+', '#'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_topics_under_the_node() {
        let text = "# HELP roost_sessions Sessions\n\
                    # TYPE roost_sessions gauge\n\
                    roost_sessions{status=\"online\"} 2\n\
                    roost_subscriptions 4\n\
                    roost_supervisor_restarts_total{path=\"broker/router\"} 1\n\
                    roost_storage_write_errors_total{kind=\"a+b\",x=\"#\"} 0\n\
                    # EOF\n";
        assert_eq!(
            sys_messages("roost@h", text),
            [
                ("$SYS/brokers/roost@h/sessions/online", "2"),
                ("$SYS/brokers/roost@h/subscriptions", "4"),
                (
                    "$SYS/brokers/roost@h/supervisor_restarts_total/broker/router",
                    "1"
                ),
                ("$SYS/brokers/roost@h/storage_write_errors_total/a_b/_", "0"),
            ]
            .map(|(t, v)| (t.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn every_topic_of_a_real_scrape_is_a_valid_topic_name() {
        let text = metrics::encode_snapshot(&metrics::Snapshot::default());
        let msgs = sys_messages("roost@localhost", &text);
        assert!(msgs.len() > 10, "{msgs:?}");
        for (topic, value) in msgs {
            assert!(
                roost_protocol::topic::validate_topic_name(&topic).is_ok(),
                "{topic}"
            );
            assert!(value.parse::<f64>().is_ok_and(|v| v >= 0.0), "{value}");
        }
    }
}
