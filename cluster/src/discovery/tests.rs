//! Tests of peer discovery: parsing, backoff, and DNS discovery against a
//! real DNS server on 127.0.0.1 (UDP), every test bounded in time.

use super::*;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, Record};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The bound on every test.
const TEST_BOUND: Duration = Duration::from_secs(10);

/// A one-zone authoritative DNS server over UDP on 127.0.0.1: answers a
/// query from `records`, NXDOMAIN for a name it has no record of, an empty
/// NOERROR answer for a known name asked for another type.
struct TestDns {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestDns {
    async fn start(records: Vec<Record>) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = socket.local_addr().expect("local addr");
        let records = Arc::new(Mutex::new(records));
        let queries = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(socket, records.clone(), queries.clone()));
        TestDns {
            addr,
            records,
            queries,
            task,
        }
    }

    fn set_records(&self, records: Vec<Record>) {
        *self.records.lock().expect("zone lock") = records;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn config(&self, name: &str, record: DnsRecord) -> DiscoveryConfig {
        DiscoveryConfig::Dns(DnsDiscovery {
            name: name.to_string(),
            record,
            port: 4370,
            nameserver: Some(self.addr),
            timeout: DEFAULT_DNS_TIMEOUT,
        })
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, records: Arc<Mutex<Vec<Record>>>, queries: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let reply = answer(&request, &records.lock().expect("zone lock"));
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

fn key(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn answer(request: &Message, records: &[Record]) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(query) = request.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(query.clone());
    let owned: Vec<&Record> = records
        .iter()
        .filter(|record| key(&record.name) == key(&query.name))
        .collect();
    if owned.is_empty() {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    for record in owned {
        if record.record_type() == query.query_type {
            reply.add_answer(record.clone());
        }
    }
    reply
}

/// TTLs of an hour: only a cache would keep an old answer.
fn a(name: &str, ip: [u8; 4]) -> Record {
    let name = Name::from_ascii(name).expect("name");
    Record::from_rdata(name, 3600, RData::A(A(Ipv4Addr::from(ip))))
}

fn aaaa(name: &str, ip: &str) -> Record {
    let name = Name::from_ascii(name).expect("name");
    let ip: Ipv6Addr = ip.parse().expect("ipv6");
    Record::from_rdata(name, 3600, RData::AAAA(AAAA(ip)))
}

fn srv(name: &str, port: u16, target: &str) -> Record {
    let name = Name::from_ascii(name).expect("name");
    let target = Name::from_ascii(target).expect("target");
    Record::from_rdata(name, 3600, RData::SRV(SRV::new(0, 10, port, target)))
}

fn candidate(host: &str, port: u16) -> Candidate {
    Candidate {
        host: host.to_string(),
        port,
    }
}

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    timeout(TEST_BOUND, test).await.expect("test took too long")
}

#[tokio::test]
async fn a_records_become_candidates_on_the_configured_port_sorted_without_duplicates() {
    bounded(async {
        let dns = TestDns::start(vec![
            a("peers.roost.test.", [10, 0, 0, 2]),
            a("peers.roost.test.", [10, 0, 0, 1]),
            a("peers.roost.test.", [10, 0, 0, 2]),
            aaaa("peers.roost.test.", "fd00::9"),
            a("other.roost.test.", [10, 9, 9, 9]),
        ])
        .await;
        let found = discover(&dns.config("peers.roost.test", DnsRecord::A))
            .await
            .expect("discover");
        assert_eq!(
            found,
            vec![candidate("10.0.0.1", 4370), candidate("10.0.0.2", 4370)]
        );
    })
    .await;
}

#[tokio::test]
async fn aaaa_records_become_ipv6_candidates() {
    bounded(async {
        let dns = TestDns::start(vec![
            aaaa("peers.roost.test.", "fd00::2"),
            aaaa("peers.roost.test.", "fd00::1"),
            a("peers.roost.test.", [10, 0, 0, 1]),
        ])
        .await;
        let found = discover(&dns.config("peers.roost.test.", DnsRecord::Aaaa))
            .await
            .expect("discover");
        assert_eq!(
            found,
            vec![candidate("fd00::1", 4370), candidate("fd00::2", 4370)]
        );
        assert_eq!(found[0].to_string(), "[fd00::1]:4370");
    })
    .await;
}

#[tokio::test]
async fn srv_records_become_target_and_port_candidates() {
    bounded(async {
        let name = "_cluster._tcp.roost.mqtt.svc.cluster.local.";
        let dns = TestDns::start(vec![
            srv(name, 4370, "roost-1.roost.mqtt.svc.cluster.local."),
            srv(name, 4371, "roost-0.roost.mqtt.svc.cluster.local."),
            // RFC 2782: "." means no service; not a peer.
            srv(name, 4370, "."),
        ])
        .await;
        let found = discover(&dns.config(name, DnsRecord::Srv))
            .await
            .expect("discover");
        assert_eq!(
            found,
            vec![
                candidate("roost-0.roost.mqtt.svc.cluster.local", 4371),
                candidate("roost-1.roost.mqtt.svc.cluster.local", 4370),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn nxdomain_is_a_not_found_error_and_quick() {
    bounded(async {
        let dns = TestDns::start(vec![a("peers.roost.test.", [10, 0, 0, 1])]).await;
        let started = Instant::now();
        let err = discover(&dns.config("missing.roost.test", DnsRecord::A))
            .await
            .expect_err("no such name");
        assert!(
            matches!(&err, DiscoveryError::NotFound { name, record: DnsRecord::A, .. } if name == "missing.roost.test"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "no A records for missing.roost.test");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_name_without_records_of_the_type_is_not_found() {
    bounded(async {
        let dns = TestDns::start(vec![a("peers.roost.test.", [10, 0, 0, 1])]).await;
        let err = discover(&dns.config("peers.roost.test", DnsRecord::Srv))
            .await
            .expect_err("no SRV records");
        assert!(
            matches!(
                err,
                DiscoveryError::NotFound {
                    record: DnsRecord::Srv,
                    ..
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unanswered_query_times_out_within_the_configured_bound() {
    bounded(async {
        // A bound socket that never answers: queries vanish.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let cfg = DiscoveryConfig::Dns(DnsDiscovery {
            name: "peers.roost.test".to_string(),
            record: DnsRecord::A,
            port: 4370,
            nameserver: Some(silent.local_addr().expect("local addr")),
            timeout: Duration::from_millis(300),
        });
        let started = Instant::now();
        let err = discover(&cfg).await.expect_err("no answer");
        let elapsed = started.elapsed();
        assert!(matches!(err, DiscoveryError::Timeout { .. }), "{err:?}");
        // It waited for an answer (one try is half the bound), then gave up.
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(err.to_string().contains("timed out after 300ms"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn records_that_change_are_read_again_on_the_next_call() {
    bounded(async {
        let dns = TestDns::start(vec![a("peers.roost.test.", [10, 0, 0, 1])]).await;
        let cfg = dns.config("peers.roost.test", DnsRecord::A);
        let first = discover(&cfg).await.expect("first discover");
        assert_eq!(first, vec![candidate("10.0.0.1", 4370)]);
        let queries_after_first = dns.queries();

        // A pod restarted on a new IP, another one joined.
        dns.set_records(vec![
            a("peers.roost.test.", [10, 0, 0, 7]),
            a("peers.roost.test.", [10, 0, 0, 3]),
        ]);
        let second = discover(&cfg).await.expect("second discover");
        assert_eq!(
            second,
            vec![candidate("10.0.0.3", 4370), candidate("10.0.0.7", 4370)]
        );
        assert!(
            dns.queries() > queries_after_first,
            "second call was not sent"
        );

        // And the name goes away (every pod deleted).
        dns.set_records(Vec::new());
        let err = discover(&cfg).await.expect_err("name gone");
        assert!(matches!(err, DiscoveryError::NotFound { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn manual_discovers_nothing_and_static_returns_the_seeds_unresolved() {
    bounded(async {
        assert_eq!(
            discover(&DiscoveryConfig::Manual).await.expect("manual"),
            vec![]
        );
        // `.invalid` never resolves (RFC 6761): returning it proves no lookup.
        let seeds = vec!["roost-b.invalid:4370".to_string(), "[::1]:4371".to_string()];
        let cfg = DiscoveryConfig::parse("static", &seeds, None, None, 4370).expect("parse");
        let found = discover(&cfg).await.expect("static");
        assert_eq!(
            found,
            vec![candidate("::1", 4371), candidate("roost-b.invalid", 4370)]
        );
    })
    .await;
}

fn problems(result: Result<DiscoveryConfig, DiscoveryError>) -> Vec<ConfigProblem> {
    match result {
        Err(DiscoveryError::InvalidConfig { problems }) => problems,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parse_accepts_each_strategy() {
    assert_eq!(
        DiscoveryConfig::parse(" Manual ", &[], None, None, 4370).expect("manual"),
        DiscoveryConfig::Manual
    );
    let seeds = strings(&[
        "roost-b.example:4370",
        "10.0.0.2:4371",
        "[fd00::1]:4370",
        "roost-c.example.:4370",
        "roost-b.example:4370",
        " ",
    ]);
    assert_eq!(
        DiscoveryConfig::parse("static", &seeds, None, Some(""), 4370).expect("static"),
        DiscoveryConfig::Static {
            seeds: vec![
                candidate("10.0.0.2", 4371),
                candidate("fd00::1", 4370),
                candidate("roost-b.example", 4370),
                candidate("roost-c.example", 4370),
            ]
        }
    );
    let cfg = DiscoveryConfig::parse(
        "DNS",
        &[],
        Some("roost-headless.mqtt.svc.cluster.local"),
        None,
        4370,
    )
    .expect("dns");
    assert_eq!(
        cfg,
        DiscoveryConfig::Dns(DnsDiscovery {
            name: "roost-headless.mqtt.svc.cluster.local".to_string(),
            record: DnsRecord::A,
            port: 4370,
            nameserver: None,
            timeout: DEFAULT_DNS_TIMEOUT,
        })
    );
    let cfg = DiscoveryConfig::parse("dns", &[], Some("_cluster._tcp.roost"), Some("SRV"), 0)
        .expect("srv");
    assert!(matches!(
        cfg,
        DiscoveryConfig::Dns(DnsDiscovery {
            record: DnsRecord::Srv,
            ..
        })
    ));
    let cfg = DiscoveryConfig::parse("dns", &[], Some("roost"), Some("aaaa"), 4370).expect("aaaa");
    assert!(matches!(
        cfg,
        DiscoveryConfig::Dns(DnsDiscovery {
            record: DnsRecord::Aaaa,
            ..
        })
    ));
}

#[test]
fn parse_rejects_an_unknown_strategy() {
    assert_eq!(
        problems(DiscoveryConfig::parse("k8s", &[], None, None, 4370)),
        vec![ConfigProblem::UnknownStrategy("k8s".to_string())]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse("", &[], None, None, 4370)),
        vec![ConfigProblem::UnknownStrategy(String::new())]
    );
}

#[test]
fn parse_rejects_bad_seeds_and_reports_them_all() {
    let seeds = strings(&[
        "roost-b.example",
        "roost-c.example:",
        "roost-d.example:0",
        "roost-e.example:65536",
        "roost-f.example:http",
        "::1",
        "fd00::1:4370",
        "[fd00::1]",
        "[not-ip]:4370",
        "bad host:4370",
        "-bad.example:4370",
        "roost-ok.example:4370",
    ]);
    let found = problems(DiscoveryConfig::parse("static", &seeds, None, None, 4370));
    let bad_port = |seed: &str, port: &str| ConfigProblem::BadSeedPort {
        seed: seed.to_string(),
        port: port.to_string(),
    };
    assert_eq!(
        found,
        vec![
            ConfigProblem::SeedWithoutPort("roost-b.example".to_string()),
            ConfigProblem::SeedWithoutPort("roost-c.example:".to_string()),
            bad_port("roost-d.example:0", "0"),
            bad_port("roost-e.example:65536", "65536"),
            bad_port("roost-f.example:http", "http"),
            ConfigProblem::Ipv6WithoutBrackets("::1".to_string()),
            ConfigProblem::Ipv6WithoutBrackets("fd00::1:4370".to_string()),
            ConfigProblem::SeedWithoutPort("[fd00::1]".to_string()),
            ConfigProblem::BadSeedHost("[not-ip]:4370".to_string()),
            ConfigProblem::BadSeedHost("bad host:4370".to_string()),
            ConfigProblem::BadSeedHost("-bad.example:4370".to_string()),
        ]
    );
}

#[test]
fn parse_rejects_static_without_seeds() {
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "static",
            &strings(&["", " "]),
            None,
            None,
            4370
        )),
        vec![ConfigProblem::NoSeeds]
    );
}

#[test]
fn parse_rejects_bad_dns_settings() {
    assert_eq!(
        problems(DiscoveryConfig::parse("dns", &[], None, None, 4370)),
        vec![ConfigProblem::EmptyDnsName]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse("dns", &[], Some("  "), None, 4370)),
        vec![ConfigProblem::EmptyDnsName]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &[],
            Some("roost..test"),
            None,
            4370
        )),
        vec![ConfigProblem::BadDnsName("roost..test".to_string())]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &[],
            Some("10.0.0.1"),
            None,
            4370
        )),
        vec![ConfigProblem::DnsNameIsIp("10.0.0.1".to_string())]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &[],
            Some("roost"),
            Some("mx"),
            4370
        )),
        vec![ConfigProblem::UnknownRecordType("mx".to_string())]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &[],
            Some("roost"),
            Some("a"),
            0
        )),
        vec![ConfigProblem::ZeroPort(DnsRecord::A)]
    );
    let long_label = "a".repeat(64);
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &[],
            Some(&long_label),
            None,
            4370
        )),
        vec![ConfigProblem::BadDnsName(long_label.clone())]
    );
}

#[test]
fn parse_rejects_settings_the_strategy_would_ignore() {
    let seeds = strings(&["roost-b.example:4370"]);
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "dns",
            &seeds,
            Some("roost"),
            None,
            4370
        )),
        vec![ConfigProblem::SeedsIgnored {
            strategy: "dns".to_string()
        }]
    );
    assert_eq!(
        problems(DiscoveryConfig::parse(
            "manual",
            &[],
            Some("roost"),
            Some("srv"),
            4370
        )),
        vec![ConfigProblem::DnsIgnored {
            strategy: "manual".to_string()
        }]
    );
}

#[test]
fn parse_reports_every_problem_at_once_in_one_message() {
    let seeds = strings(&["roost-b.example", "roost-c.example:0"]);
    let err = DiscoveryConfig::parse("gossip", &seeds, Some("roost"), Some("txt"), 4370)
        .expect_err("invalid");
    let text = err.to_string();
    for expected in [
        "invalid cluster discovery config: ",
        "seed \"roost-b.example\" has no port",
        "seed \"roost-c.example:0\" has a bad port \"0\"",
        "unknown DNS record type \"txt\"",
        "seeds are set but the discovery strategy is gossip",
        "DNS discovery settings are set but the discovery strategy is gossip",
        "unknown discovery strategy \"gossip\"",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from {text:?}"
        );
    }
    assert_eq!(problems(Err(err)).len(), 6);
}

#[test]
fn backoff_ceiling_doubles_from_base_and_caps_at_max() {
    let base = Duration::from_millis(100);
    let max = Duration::from_secs(5);
    let ceilings: Vec<Duration> = (0..8).map(|n| backoff_ceiling(n, base, max)).collect();
    let millis: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
    assert_eq!(millis, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    // No overflow for absurd attempts or durations.
    assert_eq!(backoff_ceiling(31, base, max), max);
    assert_eq!(backoff_ceiling(32, base, max), max);
    assert_eq!(backoff_ceiling(u32::MAX, base, max), max);
    assert_eq!(
        backoff_ceiling(3, Duration::MAX, Duration::MAX),
        Duration::MAX
    );
    // A base above the cap is capped; a zero cap means no wait.
    assert_eq!(backoff_ceiling(0, Duration::from_secs(9), max), max);
    assert_eq!(backoff_ceiling(4, base, Duration::ZERO), Duration::ZERO);
}

#[test]
fn backoff_is_jittered_over_the_whole_range_below_the_ceiling() {
    let base = Duration::from_millis(100);
    let max = Duration::from_secs(5);
    for attempt in [0, 3, 10, u32::MAX] {
        let ceiling = backoff_ceiling(attempt, base, max);
        let samples: Vec<Duration> = (0..2000).map(|_| backoff(attempt, base, max)).collect();
        assert!(samples.iter().all(|d| *d <= ceiling), "attempt {attempt}");
        let low = samples.iter().min().copied().unwrap_or_default();
        let high = samples.iter().max().copied().unwrap_or_default();
        // Full jitter: the draws spread over [0, ceiling], not clustered.
        // Each bound fails with probability (3/4)^2000.
        assert!(
            low < ceiling / 4,
            "attempt {attempt}: min {low:?} of {ceiling:?}"
        );
        assert!(
            high > ceiling * 3 / 4,
            "attempt {attempt}: max {high:?} of {ceiling:?}"
        );
    }
    assert_eq!(backoff(5, base, Duration::ZERO), Duration::ZERO);
    // The widest range (more nanoseconds than a u64 holds) does not panic.
    let _ = backoff(5, Duration::MAX, Duration::MAX);
}
