//! A real MQTT client library (rumqttc, 3.1.1 and 5.0) against an in-process
//! broker over TCP: what a user's application sees.

mod common;

use std::time::Duration;

use common::{Broker, WAIT};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

fn v4_client(b: &Broker, id: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, b.addr.ip().to_string(), b.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(o, 100)
}

/// Polls the event loop until a PUBLISH arrives (bounded).
async fn next_publish(el: &mut EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("connection error: {e}"),
            }
        }
    })
    .await
    .expect("a publish in time")
}

/// Polls until the SUBACK (bounded).
async fn until_suback(el: &mut EventLoop) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                return;
            }
        }
    })
    .await
    .expect("suback in time")
}

/// Drive a client's event loop in the background.
fn drive(mut el: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while el.poll().await.is_ok() {} })
}

#[tokio::test]
async fn v311_client_publishes_and_receives_at_each_qos() {
    let b = Broker::start().await;
    let (sub, mut sub_el) = v4_client(&b, "v4-sub");
    sub.subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .unwrap();
    until_suback(&mut sub_el).await;
    let (publ, publ_el) = v4_client(&b, "v4-pub");
    let driver = drive(publ_el);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(format!("sensors/{i}/temp"), qos, false, vec![i as u8])
            .await
            .unwrap();
        let p = next_publish(&mut sub_el).await;
        assert_eq!(p.topic, format!("sensors/{i}/temp"));
        assert_eq!(p.qos, qos);
        assert_eq!(&p.payload[..], &[i as u8]);
    }
    driver.abort();
    b.stop().await;
}

#[tokio::test]
async fn v5_client_receives_user_properties_untouched() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::{mqttbytes::QoS as Q5, AsyncClient as C5, Event as E5, MqttOptions as O5};
    let b = Broker::start().await;
    let (sub, mut sub_el) = C5::new(
        O5::new("v5-sub", b.addr.ip().to_string(), b.addr.port()),
        100,
    );
    sub.subscribe("req/#", Q5::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(E5::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))) =
                sub_el.poll().await
            {
                return;
            }
        }
    })
    .await
    .expect("suback");
    let (publ, mut publ_el) = C5::new(
        O5::new("v5-pub", b.addr.ip().to_string(), b.addr.port()),
        100,
    );
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
        content_type: Some("text/plain".into()),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr")),
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publ.publish_with_properties("req/x", Q5::AtLeastOnce, false, "hello", props.clone())
        .await
        .unwrap();
    tokio::spawn(async move { while publ_el.poll().await.is_ok() {} });
    let p = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(E5::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p))) =
                sub_el.poll().await
            {
                return p;
            }
        }
    })
    .await
    .expect("publish");
    let got = p.properties.expect("properties forwarded");
    assert_eq!(got.user_properties, props.user_properties);
    assert_eq!(got.content_type, props.content_type);
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.payload_format_indicator, Some(1));
    b.stop().await;
}
