//! Loading tests: defaults, problem collection, environment overrides.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn problems(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(cfg) => panic!("expected problems, got {cfg:?}"),
        Err(errors) => errors,
    }
}

#[test]
fn default_equals_the_embedded_file() {
    assert_eq!(parse(DEFAULT_CONFIG), Ok(Config::default()));
    assert_eq!(load(None, &[]), Ok(Config::default()));
}

#[test]
fn default_is_valid() {
    assert_eq!(Config::default().validate(), vec![]);
}

#[test]
fn serialized_config_reads_back_equal() {
    let mut cfg = Config::default();
    cfg.mqtt.max_packet_size = ByteSize::bytes(65_536);
    cfg.mqtt.handshake_timeout = HumanDuration::from_millis(2_500);
    let text = toml::to_string(&cfg).expect("Config serializes");
    assert_eq!(parse(&text), Ok(cfg));
}

#[test]
fn embedded_file_documents_every_key() {
    let file: toml::Table = toml::from_str(DEFAULT_CONFIG).expect("embedded file is TOML");
    let defaults = toml::Table::try_from(Config::default()).expect("Config serializes");
    for (section, keys) in &defaults {
        let keys = keys.as_table().expect("sections are tables");
        for key in keys.keys() {
            let in_file = file.get(section).and_then(|s| s.get(key));
            assert!(
                in_file.is_some(),
                "{section}.{key} missing from default_config.toml"
            );
        }
    }
}

#[test]
fn empty_file_means_defaults() {
    assert_eq!(parse(""), Ok(Config::default()));
    assert_eq!(parse("[mqtt]\n"), Ok(Config::default()));
}

#[test]
fn values_are_read_with_their_units() {
    let cfg = parse("[mqtt]\nmax_packet_size = \"64KiB\"\nmax_session_expiry = \"2h30m\"\nlisten = \"127.0.0.1:1884\"")
        .expect("valid config");
    assert_eq!(cfg.mqtt.max_packet_size.as_u64(), 65_536);
    assert_eq!(
        cfg.mqtt.max_session_expiry.as_duration(),
        Duration::from_secs(9_000)
    );
    assert_eq!(cfg.mqtt.listen.port(), 1884);
}

#[test]
fn unknown_key_in_a_section_is_named_by_its_path() {
    let errors = problems("[mqtt]\nmax_inflght = 10\n");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let p = &errors.0[0];
    assert_eq!(
        (p.path.as_str(), p.kind),
        ("mqtt.max_inflght", ProblemKind::UnknownKey)
    );
    assert_eq!(p.line, Some(2));
    assert!(
        p.message.contains("did you mean `max_inflight`?"),
        "{}",
        p.message
    );
    assert_eq!(
        p.to_string(),
        "line 2: mqtt.max_inflght: unknown key (did you mean `max_inflight`?)"
    );
}

#[test]
fn unknown_section_is_reported_once() {
    let errors = problems("[mqqt]\nlisten = \"0.0.0.0:1\"\nmax_qos = 1\n");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "mqqt");
    assert_eq!(errors.0[0].line, Some(1));
    assert_eq!(errors.0[0].kind, ProblemKind::UnknownKey);
    assert!(
        errors.0[0].message.contains("`mqtt`"),
        "{}",
        errors.0[0].message
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "\
[node]
name = \"no-at-sign\"
[mqtt]
max_inflght = 10
max_inflight = \"lots\"
max_qos = 3
handshake_timeout = \"10x\"
max_packet_size = 70000
";
    let errors = problems(text);
    let found: Vec<(&str, ProblemKind)> =
        errors.0.iter().map(|p| (p.path.as_str(), p.kind)).collect();
    assert_eq!(
        found,
        vec![
            ("node.name", ProblemKind::Invalid),
            ("mqtt.max_inflght", ProblemKind::UnknownKey),
            ("mqtt.max_inflight", ProblemKind::Type),
            ("mqtt.max_qos", ProblemKind::Invalid),
            ("mqtt.handshake_timeout", ProblemKind::Type),
        ],
        "{errors}"
    );
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 5, "{shown}");
    assert!(
        shown.contains("line 5: mqtt.max_inflight: invalid type: string \"lots\""),
        "{shown}"
    );
    assert!(
        shown.contains("mqtt.handshake_timeout: invalid duration \"10x\": unknown unit `x`"),
        "{shown}"
    );
    assert!(
        shown.contains("line 6: mqtt.max_qos: must be 0, 1 or 2, got 3"),
        "{shown}"
    );
}

#[test]
fn integer_range_errors_name_the_range() {
    let errors = problems("[mqtt]\nmax_inflight = 70000\n");
    let p = errors.find("mqtt.max_inflight").expect("problem reported");
    assert!(p.message.contains("from 0 to 65535"), "{}", p.message);
}

#[test]
fn key_under_the_wrong_section_suggests_the_right_one() {
    let errors = problems("[log]\nmax_qos = 1\n");
    assert_eq!(errors.0[0].path, "log.max_qos");
    let message = &errors.0[0].message;
    assert!(
        message.ends_with("(did you mean `mqtt.max_qos`?)"),
        "{message}"
    );
}

#[test]
fn wrong_type_for_a_whole_section_is_reported() {
    let errors = problems("mqtt = 5\n");
    assert_eq!(errors.0[0].path, "mqtt");
    assert_eq!(errors.0[0].kind, ProblemKind::Type);
    assert_eq!(
        errors.0[0].message,
        "invalid type: integer `5`, expected a table"
    );
}

#[test]
fn syntax_error_gives_line_and_column() {
    let errors = problems("[mqtt]\nlisten = \n");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].kind, ProblemKind::Syntax);
    assert!(
        errors.0[0].message.contains("line 2"),
        "{}",
        errors.0[0].message
    );
}

#[test]
fn cross_key_validation_names_the_key() {
    let errors = problems("[mqtt]\nmax_packet_size = \"2MB\"\noutbound_buffer = \"1MB\"\n");
    let p = errors
        .find("mqtt.outbound_buffer")
        .expect("problem reported");
    assert_eq!(p.kind, ProblemKind::Invalid);
    assert_eq!(p.line, Some(3));
}

#[test]
fn env_overrides_a_nested_key_case_insensitively() {
    let vars = env(&[
        ("ROOST_MQTT__LISTEN", "127.0.0.1:1884"),
        ("roost_mqtt__max_inflight", "64"),
        ("ROOST_MQTT__MAX_PACKET_SIZE", "64KB"),
        ("ROOST_NODE__NAME", "roost@host.example"),
        ("PATH", "/usr/bin"),
    ]);
    let cfg = load(None, &vars).expect("valid overrides");
    assert_eq!(cfg.mqtt.listen, "127.0.0.1:1884".parse().expect("addr"));
    assert_eq!(cfg.mqtt.max_inflight, 64);
    assert_eq!(cfg.mqtt.max_packet_size, ByteSize::bytes(64_000));
    assert_eq!(cfg.node.name, "roost@host.example");
}

#[test]
fn env_value_that_reads_as_a_number_can_still_be_a_string() {
    let vars = env(&[
        ("ROOST_LOG__LEVEL", "1"),
        ("ROOST_MQTT__RETAIN_AVAILABLE", "false"),
    ]);
    let cfg = load(None, &vars).expect("valid overrides");
    assert_eq!(cfg.log.level, "1");
    assert!(!cfg.mqtt.retain_available);
}

#[test]
fn env_overrides_the_file() {
    let path = write_temp("env_overrides_the_file", "[mqtt]\nmax_inflight = 10\n");
    let vars = env(&[("ROOST_MQTT__MAX_INFLIGHT", "20")]);
    let cfg = load(Some(&path), &vars);
    let _ = std::fs::remove_file(&path);
    assert_eq!(cfg.map(|c| c.mqtt.max_inflight), Ok(20));
}

#[test]
fn unknown_or_malformed_env_override_is_an_error() {
    let vars = env(&[
        ("ROOST_MQTT__MAX_INFLGHT", "10"),
        ("ROOST_MQTT__MAX_QOS", "high"),
        ("ROOST_MQTT__", "x"),
    ]);
    let errors = load(None, &vars).expect_err("bad overrides");
    let p = errors
        .find("mqtt.max_inflght")
        .expect("unknown key reported");
    assert_eq!(p.kind, ProblemKind::UnknownKey);
    assert_eq!(
        p.origin,
        Some(Origin::Env("ROOST_MQTT__MAX_INFLGHT".into()))
    );
    assert!(
        p.to_string()
            .starts_with("ROOST_MQTT__MAX_INFLGHT: mqtt.max_inflght: unknown key"),
        "{p}"
    );
    assert_eq!(
        errors.find("mqtt.max_qos").map(|p| p.kind),
        Some(ProblemKind::Type)
    );
    assert!(
        errors
            .0
            .iter()
            .any(|p| p.kind == ProblemKind::MalformedOverride),
        "{errors}"
    );
    assert_eq!(errors.0.len(), 3, "{errors}");
}

#[test]
fn roost_token_is_not_a_config_override() {
    let cfg = load(None, &env(&[("ROOST_TOKEN", "secret-for-roost-ctl")]));
    assert_eq!(cfg, Ok(Config::default()));
}

#[test]
fn mgmt_keys_are_read_and_checked() {
    let cfg = load(
        None,
        &env(&[
            ("ROOST_MGMT__LISTEN", "127.0.0.1:9999"),
            ("ROOST_MGMT__TOKEN", "0123456789abcdef"),
        ]),
    )
    .expect("valid");
    assert_eq!(cfg.mgmt.listen.port(), 9999);
    assert_eq!(cfg.mgmt.token, "0123456789abcdef");
    let errors = problems("[mgmt]\ntoken = \"short\"\n");
    assert!(errors.find("mgmt.token").is_some(), "{errors}");
    let errors = problems("[mgmt]\ntoken = \"has a space in it, long enough\"\n");
    assert!(errors.find("mgmt.token").is_some(), "{errors}");
}

#[test]
fn storage_keys_are_read_from_the_file_and_the_environment() {
    let cfg = parse("[storage]\nsync = true\n").expect("valid");
    assert!(cfg.storage.sync && !cfg.storage.quarantine_corrupt);
    let vars = env(&[("ROOST_STORAGE__QUARANTINE_CORRUPT", "true")]);
    let cfg = load(None, &vars).expect("valid override");
    assert!(cfg.storage.quarantine_corrupt && !cfg.storage.sync);
    let errors = problems("[storage]\nsync = \"yes\"\nquarantine = true\n");
    assert!(errors.find("storage.sync").is_some(), "{errors}");
    assert!(errors.find("storage.quarantine").is_some(), "{errors}");
}

#[test]
fn overload_keys_are_read_with_their_units_and_off_by_default() {
    let d = Config::default();
    assert_eq!(d.node.memory_high_watermark, ByteSize::bytes(0));
    assert_eq!(d.node.memory_check_interval, HumanDuration::from_secs(1));
    assert_eq!(
        (d.mqtt.max_connection_rate, d.mqtt.max_publish_rate),
        (0, 0)
    );
    assert_eq!(d.mqtt.max_publish_bytes_rate, ByteSize::bytes(0));
    let cfg = parse(
        "[node]\nmemory_high_watermark = \"6GiB\"\nmemory_check_interval = \"500ms\"\n\
         [mqtt]\nmax_connection_rate = 1000\nmax_publish_rate = 100\nmax_publish_bytes_rate = \"1MB\"\n",
    )
    .expect("valid");
    assert_eq!(cfg.node.memory_high_watermark.as_u64(), 6 << 30);
    assert_eq!(
        cfg.node.memory_check_interval.as_duration(),
        Duration::from_millis(500)
    );
    assert_eq!(cfg.mqtt.max_connection_rate, 1000);
    assert_eq!(cfg.mqtt.max_publish_rate, 100);
    assert_eq!(cfg.mqtt.max_publish_bytes_rate.as_u64(), 1_000_000);
    let vars = env(&[
        ("ROOST_NODE__MEMORY_HIGH_WATERMARK", "512MiB"),
        ("ROOST_MQTT__MAX_PUBLISH_RATE", "5"),
    ]);
    let cfg = load(None, &vars).expect("valid overrides");
    assert_eq!(cfg.node.memory_high_watermark.as_u64(), 512 << 20);
    assert_eq!(cfg.mqtt.max_publish_rate, 5);
}

#[test]
fn overload_keys_are_checked() {
    let errors = problems(
        "[node]\nmemory_check_interval = \"0s\"\nmemory_high_watermark = \"lots\"\n\
         [mqtt]\nmax_publish_rate = -1\nmax_connection_rate = 1.5\n",
    );
    let found: Vec<(&str, ProblemKind)> =
        errors.0.iter().map(|p| (p.path.as_str(), p.kind)).collect();
    for want in [
        ("node.memory_high_watermark", ProblemKind::Type),
        ("mqtt.max_publish_rate", ProblemKind::Type),
        ("mqtt.max_connection_rate", ProblemKind::Type),
    ] {
        assert!(found.contains(&want), "{want:?} not in {errors}");
    }
    let errors = problems("[node]\nmemory_check_interval = \"0s\"\n");
    let p = errors
        .find("node.memory_check_interval")
        .expect("problem reported");
    assert_eq!(p.kind, ProblemKind::Invalid);
}

#[test]
fn the_same_key_set_twice_by_env_is_an_error() {
    let vars = env(&[("ROOST_MQTT__MAX_QOS", "1"), ("roost_mqtt__max_qos", "2")]);
    let errors = load(None, &vars).expect_err("ambiguous overrides");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].kind, ProblemKind::MalformedOverride);
    assert_eq!(
        errors.to_string(),
        "roost_mqtt__max_qos: mqtt.max_qos is also set by ROOST_MQTT__MAX_QOS"
    );
}

#[test]
fn unreadable_file_is_one_problem_naming_the_file() {
    let path = PathBuf::from("/nonexistent/roost-test/roost.toml");
    let errors = load(Some(&path), &[]).expect_err("missing file");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].kind, ProblemKind::Unreadable);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/roost-test/roost.toml: cannot read"),
        "{errors}"
    );
}

#[test]
fn file_problems_carry_the_file_and_line() {
    let path = write_temp(
        "file_problems_carry_the_file_and_line",
        "[mqtt]\n\nmax_qos = 7\n",
    );
    let errors = load(Some(&path), &[]).expect_err("bad value");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3: mqtt.max_qos: must be 0, 1 or 2, got 7",
            path.display()
        )
    );
}

/// Writes `text` to a file in the temp dir named after the test and the process.
pub(crate) fn write_temp(test: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("roost-{test}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("temp dir is writable");
    path
}

/// The commented `[[bridges]]` example of default_config.toml, uncommented.
fn bridge_example() -> String {
    let start = DEFAULT_CONFIG
        .find("# [[bridges]]")
        .expect("example present");
    DEFAULT_CONFIG[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_bridge_example_is_valid() {
    let cfg = parse(&bridge_example()).expect("the example is valid");
    let b = &cfg.bridges[0];
    assert_eq!(b.name, "to-cloud");
    assert_eq!(b.local_topics, vec!["sensors/#".to_string()]);
    assert_eq!(b.buffer.max_bytes, ByteSize::bytes(1 << 30));
    assert_eq!(b.buffer.request_ttl, None);
}

#[test]
fn the_documented_ingress_and_http_examples_are_valid() {
    let cfg = parse(&bridge_example()).expect("the examples are valid");
    let kinds: Vec<_> = cfg.bridges.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(kinds, ["mqtt", "mqtt_ingress", "http"]);
    let (ingress, http) = (&cfg.bridges[1], &cfg.bridges[2]);
    assert_eq!(ingress.remote_topics, vec!["site1/commands/#".to_string()]);
    assert_eq!(ingress.local_prefix, "cloud/");
    assert_eq!(http.url, "http://hooks.example:8080/ingest");
    assert_eq!(http.batch_size, 100);
    assert_eq!(http.headers["authorization"], "Bearer change-me");
}

#[test]
fn bad_http_and_ingress_bridges_are_reported_by_path() {
    let text = r#"
[[bridges]]
name = "h"
kind = "http"
url = "https://x.example/"
remote = "x:1"
local_topics = ["a"]
request_timeout = "0s"
batch_size = 0
remote_topics = ["b"]
[bridges.headers]
"bad name" = "v"

[[bridges]]
name = "i"
kind = "mqtt_ingress"
remote = "h:1"
local_topics = ["a"]
remote_topics = ["a/+b"]
local_prefix = "x/#"

[[bridges]]
name = "j"
kind = "http"
url = "not a url"
local_topics = ["a"]
"#;
    let errors = problems(text);
    for path in [
        "bridges[0].url",
        "bridges[0].remote",
        "bridges[0].request_timeout",
        "bridges[0].batch_size",
        "bridges[0].remote_topics",
        "bridges[0].headers",
        "bridges[1].local_topics",
        "bridges[1].remote_topics",
        "bridges[1].local_prefix",
        "bridges[2].url",
    ] {
        let p = errors
            .find(path)
            .unwrap_or_else(|| panic!("{path} not reported in {errors}"));
        assert_eq!(p.kind, ProblemKind::Invalid, "{path}");
    }
    assert!(errors
        .find("bridges[0].url")
        .unwrap()
        .message
        .contains("https is not supported"));
    let ok = "[[bridges]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://h:1/p\"\nlocal_topics = [\"a\"]\n";
    assert_eq!(parse(ok).map(|c| c.bridges.len()), Ok(1));
}

#[test]
fn a_config_with_bridges_reads_back_equal() {
    let mut cfg = parse(&bridge_example()).unwrap();
    cfg.bridges[0].buffer.request_ttl = Some(HumanDuration::from_secs(60));
    let text = toml::to_string(&cfg).expect("Config serializes");
    assert_eq!(parse(&text), Ok(cfg));
}

#[test]
fn bad_bridges_are_all_reported_by_path() {
    let text = r#"
[[bridges]]
name = "a/b"
kind = "kafka"
remote = "mqtt://cloud"
protocol = "4"
local_topics = ["a/+b", "$share/g/x"]
remote_prefix = "x/#"
qos = 2
reconnect_min = "10s"
reconnect_max = "1s"
[bridges.buffer]
mode = "disk"
memory_bytes = "2MB"
max_bytes = "1MB"

[[bridges]]
name = "ok"
remote = "[::1]:1883"
local_topics = ["t/#"]
[bridges.buffer]
max_bytes = 0
"#;
    let errors = problems(text);
    for path in [
        "bridges[0].name",
        "bridges[0].kind",
        "bridges[0].remote",
        "bridges[0].protocol",
        "bridges[0].local_topics",
        "bridges[0].remote_prefix",
        "bridges[0].qos",
        "bridges[0].reconnect_max",
        "bridges[0].buffer.mode",
        "bridges[0].buffer.memory_bytes",
        "bridges[1].buffer.max_bytes",
    ] {
        let p = errors
            .find(path)
            .unwrap_or_else(|| panic!("{path} not reported in {errors}"));
        assert_eq!(p.kind, ProblemKind::Invalid, "{path}");
    }
    let kind = errors.find("bridges[0].kind").unwrap();
    assert!(kind.message.contains("unknown kind \"kafka\""), "{kind}");
    let topics: Vec<_> = errors
        .0
        .iter()
        .filter(|p| p.path == "bridges[0].local_topics")
        .collect();
    assert_eq!(topics.len(), 2, "{errors}");
}

#[test]
fn bridge_names_must_be_unique_and_keys_known() {
    let dup = "[[bridges]]\nname = \"x\"\nremote = \"h:1\"\nlocal_topics = [\"a\"]\n\
               [[bridges]]\nname = \"x\"\nremote = \"h:1\"\nlocal_topics = [\"a\"]\n";
    assert!(problems(dup).find("bridges[1].name").is_some());
    let unknown =
        "[[bridges]]\nname = \"x\"\nremote = \"h:1\"\nlocal_topics = [\"a\"]\nremot = 1\n";
    let errors = problems(unknown);
    let p = errors.find("bridges").expect("reported");
    assert_eq!(p.kind, ProblemKind::UnknownKey);
    assert!(p.message.contains("`remot`"), "{p}");
}
