//! Human-readable output of `roost ctl`: aligned tables and key/value
//! blocks. Pure functions from the API's types to text.

use std::fmt::Write as _;

use crate::mgmt::types::{
    BridgeDetail, BridgeSummary, ClientDetail, ClientSummary, RetainedMessage, RetainedSummary,
    RouteEntry, Status, SubscriptionEntry, TreeEntry,
};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_empty(text: String, rows: usize, what: &str) -> String {
    if rows == 0 {
        format!("(no {what})\n")
    } else {
        text
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `1d 2h 3m 4s`, leading zero units left out.
pub fn duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
    ];
    let mut out = String::new();
    for (n, unit) in parts {
        if n > 0 || !out.is_empty() {
            let _ = write!(out, "{n}{unit} ");
        }
    }
    let _ = write!(out, "{}s", secs % 60);
    out
}

pub fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

pub fn status(s: &Status) -> String {
    let listeners: Vec<String> = s
        .listeners
        .iter()
        .map(|l| format!("{} on {}: {}", l.name, l.addr, l.connections))
        .collect();
    pairs(&[
        ("node", s.node.clone()),
        ("version", s.version.clone()),
        ("uptime", duration(s.uptime_secs)),
        (
            "connections",
            format!("{} ({})", s.connections, listeners.join(", ")),
        ),
        (
            "sessions",
            format!(
                "{} online, {} offline",
                s.sessions_online, s.sessions_offline
            ),
        ),
        ("subscriptions", s.subscriptions.to_string()),
        ("routes", s.routes.to_string()),
        ("retained", s.retained.to_string()),
    ])
}

pub fn clients(list: &[ClientSummary]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.client_id.clone(),
                c.node.clone(),
                yes_no(c.connected),
                c.subscriptions.to_string(),
                c.inflight.to_string(),
                c.queued.to_string(),
            ]
        })
        .collect();
    let text = table(
        &[
            "CLIENT ID",
            "NODE",
            "CONNECTED",
            "SUBSCRIPTIONS",
            "INFLIGHT",
            "QUEUED",
        ],
        &rows,
    );
    or_empty(text, rows.len(), "clients")
}

pub fn client(c: &ClientDetail) -> String {
    let mut out = pairs(&[
        ("client id", c.client_id.clone()),
        ("connected", yes_no(c.connected)),
        ("inflight", c.inflight.to_string()),
        ("queued", c.queued.to_string()),
        ("dropped (queue full)", c.dropped_queue_full.to_string()),
        ("dropped (inbox full)", c.inbox_dropped.to_string()),
        ("subscriptions", c.subscriptions.len().to_string()),
    ]);
    for s in &c.subscriptions {
        let _ = writeln!(out, "  {s}");
    }
    out
}

pub fn subscriptions(list: &[SubscriptionEntry]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| vec![s.client_id.clone(), s.filter.clone(), s.qos.to_string()])
        .collect();
    or_empty(
        table(&["CLIENT ID", "FILTER", "QOS"], &rows),
        rows.len(),
        "subscriptions",
    )
}

pub fn routes(list: &[RouteEntry]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.node.clone(),
                if r.shared { "shared" } else { "direct" }.to_owned(),
                r.subscribers.to_string(),
            ]
        })
        .collect();
    or_empty(
        table(&["TOPIC", "NODE", "KIND", "SUBSCRIBERS"], &rows),
        rows.len(),
        "routes",
    )
}

pub fn retained(list: &[RetainedSummary]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.qos.to_string(),
                r.payload_bytes.to_string(),
            ]
        })
        .collect();
    or_empty(
        table(&["TOPIC", "QOS", "BYTES"], &rows),
        rows.len(),
        "retained messages",
    )
}

pub fn retained_message(m: &RetainedMessage) -> String {
    let payload = match &m.payload_utf8 {
        Some(text) => text.clone(),
        None => format!("(binary, base64) {}", m.payload_base64),
    };
    let expires = m
        .expires_in_secs
        .map_or_else(|| "never".to_owned(), |s| format!("in {}", duration(s)));
    pairs(&[
        ("topic", m.topic.clone()),
        ("qos", m.qos.to_string()),
        ("bytes", m.payload_bytes.to_string()),
        ("expires", expires),
        ("payload", payload),
    ])
}

fn dropped_total(b: &BridgeSummary) -> u64 {
    b.dropped.values().sum()
}

pub fn bridges(list: &[BridgeSummary]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let q = &b.queued;
            vec![
                b.name.clone(),
                b.kind.clone(),
                b.remote.clone(),
                b.state.clone(),
                (q.memory_messages + q.disk_messages).to_string(),
                (q.memory_bytes + q.disk_bytes).to_string(),
                q.disk_messages.to_string(),
                b.inflight.to_string(),
                b.sent.to_string(),
                b.retried.to_string(),
                dropped_total(b).to_string(),
            ]
        })
        .collect();
    let text = table(
        &[
            "NAME", "KIND", "REMOTE", "STATE", "QUEUED", "BYTES", "ON DISK", "INFLIGHT", "SENT",
            "RETRIED", "DROPPED",
        ],
        &rows,
    );
    or_empty(text, rows.len(), "bridges")
}

pub fn bridge(d: &BridgeDetail) -> String {
    let (b, c) = (&d.summary, &d.config);
    let q = &b.queued;
    let dropped: Vec<String> = b
        .dropped
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let ttl = c
        .buffer_request_ttl_secs
        .map_or_else(|| "none".to_owned(), duration);
    pairs(&[
        ("name", b.name.clone()),
        ("kind", b.kind.clone()),
        ("remote", b.remote.clone()),
        ("state", b.state.clone()),
        ("link", b.link.clone()),
        (
            "queued (memory)",
            format!("{} messages, {} bytes", q.memory_messages, q.memory_bytes),
        ),
        (
            "queued (disk)",
            format!("{} messages, {} bytes", q.disk_messages, q.disk_bytes),
        ),
        ("inflight", b.inflight.to_string()),
        ("sent", b.sent.to_string()),
        ("retried", b.retried.to_string()),
        (
            "dropped",
            if dropped.is_empty() {
                "0".to_owned()
            } else {
                format!("{} ({})", dropped_total(b), dropped.join(", "))
            },
        ),
        ("client id", c.client_id.clone()),
        ("protocol", c.protocol.clone()),
        ("clean start", yes_no(c.clean_start)),
        ("username", c.username.clone().unwrap_or_default()),
        (
            "password",
            if c.password_set { "(set)" } else { "" }.to_owned(),
        ),
        ("local topics", c.local_topics.join(", ")),
        ("remote prefix", c.remote_prefix.clone()),
        ("qos", c.qos.to_string()),
        ("max inflight", c.max_inflight.to_string()),
        (
            "buffer",
            format!(
                "{}, memory {} bytes, max {} bytes, request ttl {ttl}",
                c.buffer_mode, c.buffer_memory_bytes, c.buffer_max_bytes
            ),
        ),
    ])
}

/// The tree with box-drawing indentation, one row per actor.
pub fn tree(root: &TreeEntry) -> String {
    let mut rows = Vec::new();
    tree_rows(root, "", "", &mut rows);
    table(
        &[
            "PATH",
            "KIND",
            "STATUS",
            "CHILDREN",
            "RESTARTS",
            "LAST FAILURE",
        ],
        &rows,
    )
}

fn tree_rows(node: &TreeEntry, lead: &str, child_lead: &str, rows: &mut Vec<Vec<String>>) {
    let failure = node
        .last_failure
        .as_ref()
        .map_or_else(String::new, |f| format!("{} {}", f.at, f.reason));
    rows.push(vec![
        format!("{lead}{}", node.name),
        node.kind.clone(),
        node.status.clone(),
        node.children.len().to_string(),
        node.restarts.to_string(),
        failure,
    ]);
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == node.children.len();
        let (branch, next) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        tree_rows(
            child,
            &format!("{child_lead}{branch}"),
            &format!("{child_lead}{next}"),
            rows,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::types::Failure;

    fn leaf(name: &str, restarts: u64) -> TreeEntry {
        TreeEntry {
            path: name.into(),
            name: name.into(),
            kind: "worker".into(),
            status: "running".into(),
            restarts,
            child_restarts: 0,
            last_failure: None,
            children: vec![],
        }
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["long-name".to_owned(), "22".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "N"], &rows),
            "ID         N\na          1\nlong-name  22\n"
        );
    }

    #[test]
    fn tree_draws_branches_and_failures() {
        let mut router = leaf("router", 1);
        router.last_failure = Some(Failure {
            reason: "boom".into(),
            at: "2024-01-01T00:00:00Z".into(),
            at_unix: 1_704_067_200,
        });
        let mut broker = leaf("broker", 0);
        broker.kind = "supervisor".into();
        broker.children = vec![router, leaf("sessions", 0)];
        let mut root = leaf("roost", 0);
        root.kind = "supervisor".into();
        root.children = vec![broker, leaf("mgmt", 0)];
        let text = tree(&root);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PATH"), "{text}");
        assert!(lines[1].starts_with("roost "), "{text}");
        assert!(lines[2].starts_with("├── broker "), "{text}");
        assert!(lines[3].starts_with("│   ├── router "), "{text}");
        assert!(
            lines[3].ends_with("1         2024-01-01T00:00:00Z boom"),
            "{text}"
        );
        assert!(lines[4].starts_with("│   └── sessions "), "{text}");
        assert!(lines[5].starts_with("└── mgmt "), "{text}");
    }

    #[test]
    fn durations_drop_leading_zero_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
        assert_eq!(duration(3600), "1h 0m 0s");
    }
}
