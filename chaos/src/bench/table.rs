//! `roost-chaos bench-table`: turns the JSON reports of several runs (one
//! per line, as written by `bench --json`) into markdown tables comparing
//! brokers, with ratios against a baseline broker (by `--label`).
//!
//! Ratios are `broker / baseline` for every column: above 1 means more
//! throughput, but also more CPU, memory or latency.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::report::{mib, DrainEnd, FlowStats, Report};

/// Parses reports, one JSON object per non-empty line.
pub fn parse_lines(text: &str) -> Result<Vec<Report>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('{'))
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("line {}", n + 1)))
        .collect()
}

/// Markdown tables for `reports`, ratios against the runs labelled `baseline`.
pub fn render(reports: &[Report], baseline: &str) -> String {
    let mut out = String::new();
    let flows: Vec<&Report> = reports.iter().filter(|r| r.flow.is_some()).collect();
    if !flows.is_empty() {
        render_flows(&mut out, &flows, baseline);
        if flows
            .iter()
            .any(|r| r.flow.as_ref().is_some_and(|f| f.drain == DrainEnd::CutOff))
        {
            out.push_str(
                "\n\\* drain cut off while deliveries were still arriving: \
                          lost includes messages the broker still held.\n",
            );
        }
    }
    let idles: Vec<&Report> = reports.iter().filter(|r| r.idle.is_some()).collect();
    if !idles.is_empty() {
        out.push('\n');
        render_idle(&mut out, &idles, baseline);
    }
    out
}

fn label(r: &Report) -> &str {
    r.label.as_deref().unwrap_or("?")
}

/// `value / base` formatted, or `-`.
fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".into(),
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The runs of the same scenario with the same parameters as `r`.
fn same_run<'a>(r: &Report, all: &[&'a Report], baseline: &str) -> Option<&'a Report> {
    all.iter().copied().find(|b| {
        label(b) == baseline
            && b.scenario == r.scenario
            && b.params.qos == r.params.qos
            && b.params.mqtt_version == r.params.mqtt_version
            && b.params.payload == r.params.payload
    })
}

struct FlowFigures {
    rate: Option<f64>,
    p99: Option<f64>,
    cpu: Option<f64>,
}

fn flow_figures(r: &Report) -> FlowFigures {
    FlowFigures {
        rate: r.flow.as_ref().map(|f| f.receive_rate),
        p99: r.latency_us.as_ref().map(|l| l.p99),
        cpu: r.broker.as_ref().and_then(|b| b.cpu_us_per_msg),
    }
}

fn render_flows(out: &mut String, runs: &[&Report], baseline: &str) {
    let _ = writeln!(
        out,
        "| scenario | qos | broker | msg/s recv | vs {baseline} | p50 us | p99 us | p99 vs {baseline} \
         | broker CPU us/msg | CPU vs {baseline} | broker RSS MiB | sent | lost | dup | reord | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let Some(f) = &r.flow else { continue };
        let mine = flow_figures(r);
        let base = same_run(r, runs, baseline).map(flow_figures);
        let base = base.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.params.qos,
            label(r),
            f.receive_rate,
            ratio(mine.rate, base.and_then(|b| b.rate)),
            num(r.latency_us.as_ref().map(|l| l.p50), 0),
            num(mine.p99, 0),
            ratio(mine.p99, base.and_then(|b| b.p99)),
            num(mine.cpu, 2),
            ratio(mine.cpu, base.and_then(|b| b.cpu)),
            num(r.broker.as_ref().map(|b| mib(b.rss_end_bytes)), 1),
            f.sent,
            lost(f),
            f.duplicates,
            f.reordered,
            r.errors.len(),
        );
    }
}

/// `lost`, marked `*` when the drain was cut off while messages were
/// still arriving (some of them were queued, not dropped).
fn lost(f: &FlowStats) -> String {
    match f.drain {
        DrainEnd::CutOff => format!("{}*", f.lost),
        _ => f.lost.to_string(),
    }
}

fn render_idle(out: &mut String, runs: &[&Report], baseline: &str) {
    let _ = writeln!(
        out,
        "| scenario | broker | established | conn/s | vs {baseline} | RSS B/conn | RSS vs {baseline} | CPU us/conn |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let Some(i) = &r.idle else { continue };
        let base = same_run(r, runs, baseline).and_then(|b| b.idle.as_ref());
        let _ = writeln!(
            out,
            "| idle | {} | {}/{} | {:.0} | {} | {} | {} | {} |",
            label(r),
            i.established,
            i.requested,
            i.connections_per_s,
            ratio(Some(i.connections_per_s), base.map(|b| b.connections_per_s)),
            num(i.rss_per_connection_bytes, 0),
            ratio(
                i.rss_per_connection_bytes,
                base.and_then(|b| b.rss_per_connection_bytes)
            ),
            num(i.cpu_us_per_connection, 1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, rate: f64) -> Report {
        Report {
            scenario: "fan-in".into(),
            label: Some(label.into()),
            flow: Some(FlowStats {
                receive_rate: rate,
                ..FlowStats::default()
            }),
            ..Report::default()
        }
    }

    #[test]
    fn ratios_are_against_the_baseline_of_the_same_scenario() {
        let text = format!(
            "{}\nnoise\n{}\n",
            run("mosquitto", 100.0).to_json(),
            run("roost", 250.0).to_json()
        );
        let reports = parse_lines(&text).expect("parse");
        let table = render(&reports, "mosquitto");
        assert!(
            table.contains("| fan-in | 0 | roost | 250 | 2.50x |"),
            "{table}"
        );
        assert!(
            table.contains("| fan-in | 0 | mosquitto | 100 | 1.00x |"),
            "{table}"
        );
    }
}
