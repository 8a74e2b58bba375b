//! The load report: text for people, JSON for scripts, HTML with charts for
//! planners.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::stats::{percentiles, Percentiles};
use super::{Outcome, Verification};

fn calls_table(outcome: &Outcome) -> Vec<(String, Percentiles)> {
    let mut rows: Vec<(String, Percentiles)> = outcome
        .stats
        .latency
        .iter()
        .map(|(call, h)| (call.to_string(), percentiles(h, outcome.elapsed)))
        .collect();
    rows.push((
        "all".into(),
        percentiles(&outcome.stats.all, outcome.elapsed),
    ));
    rows
}

/// The text report.
pub fn text(outcome: &Outcome) -> String {
    let mut out = String::new();
    write_run(&mut out, outcome);
    write_calls(&mut out, outcome);
    write_outcomes(&mut out, outcome);
    write_verification(&mut out, outcome.verification.as_ref());
    out
}

/// The run's shape: its length, clients, loop, mix and servers.
fn write_run(out: &mut String, outcome: &Outcome) {
    let c = &outcome.config;
    let _ = writeln!(
        out,
        "stockraft load: {:.1} s, {} clients x {} in flight, {}, {}{}",
        outcome.elapsed.as_secs_f64(),
        c.clients,
        c.in_flight,
        if c.stream { "streaming" } else { "unary calls" },
        match c.rate {
            Some(r) => format!("open loop at {r:.0} ops/s"),
            None => "closed loop".into(),
        },
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    let mix: Vec<String> = c.mix.iter().map(|(w, n)| format!("{w}={n}")).collect();
    let _ = writeln!(
        out,
        "workload: {}; servers: {} ({})",
        mix.join(","),
        c.servers.join(","),
        match c.route {
            super::Route::Leader => "clients on the leader",
            super::Route::Spread => "clients spread over them",
        }
    );
    if outcome.leader_moves > 0 {
        let _ = writeln!(
            out,
            "the leader stopped answering: clients moved to a new one {} time(s)",
            outcome.leader_moves
        );
    }
}

/// Latency percentiles and throughput, per call and over all calls.
fn write_calls(out: &mut String, outcome: &Outcome) {
    let _ = writeln!(
        out,
        "\n{:<26} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "call", "count", "per sec", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (call, p) in calls_table(outcome) {
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            call, p.count, p.per_second, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
        );
    }
}

/// The outcomes other than OK, per call, and the errors by status code.
fn write_outcomes(out: &mut String, outcome: &Outcome) {
    let _ = writeln!(out, "\noutcomes:");
    for ((call, outcome_name), n) in &outcome.stats.outcomes {
        if *outcome_name == "OK" {
            continue;
        }
        let _ = writeln!(out, "  {call:<24} {outcome_name:<20} {n}");
    }
    if outcome.stats.errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let _ = writeln!(out, "errors:");
        for (code, n) in &outcome.stats.errors {
            let _ = writeln!(out, "  {code:<24} {n}");
        }
    }
}

/// The verification's verdict and what it found wrong.
fn write_verification(out: &mut String, verification: Option<&Verification>) {
    match verification {
        None => {
            let _ = writeln!(out, "\nverification: skipped (--no-verify)");
        }
        Some(Verification {
            unreadable: Some(reason),
            ..
        }) => {
            let _ = writeln!(
                out,
                "\nverification: NOT DONE: no server given answered the read-back ({reason})"
            );
        }
        Some(v) => {
            let _ = writeln!(
                out,
                "\nverification: {} ({} counters read back; reserved checked on {}, on_hand on {}, oversell on {}; {} calls with unknown outcome resolved by retrying their ids; {} counters left uncertain)",
                if v.passed() {
                    "PASSED"
                } else if v.inconclusive() {
                    "INCONCLUSIVE, every counter left uncertain"
                } else {
                    "FAILED"
                },
                v.counters_checked,
                v.reserved_checked,
                v.on_hand_checked,
                v.oversell_checked,
                v.resolved_by_retry,
                v.uncertain
            );
            for m in &v.mismatches {
                let _ = writeln!(out, "  mismatch: {m}");
            }
            for m in &v.oversold {
                let _ = writeln!(out, "  OVERSOLD: {m}");
            }
        }
    }
}

/// The JSON report.
pub fn json(outcome: &Outcome) -> Value {
    let calls: serde_json::Map<String, Value> = calls_table(outcome)
        .into_iter()
        .map(|(call, p)| (call, serde_json::to_value(p).unwrap_or(Value::Null)))
        .collect();
    let outcomes: Vec<Value> = outcome
        .stats
        .outcomes
        .iter()
        .filter(|((_, o), _)| *o != "OK")
        .map(|((call, o), n)| json!({"call": call, "outcome": o, "count": n}))
        .collect();
    let c = &outcome.config;
    json!({
        "elapsed_s": outcome.elapsed.as_secs_f64(),
        "interrupted": outcome.interrupted,
        "leader_moves": outcome.leader_moves,
        "config": {
            "servers": c.servers, "route": c.route.name(), "clients": c.clients, "in_flight": c.in_flight, "stream": c.stream,
            "rate": c.rate, "workload": c.mix.iter().map(|(w, n)| format!("{w}={n}")).collect::<Vec<_>>(),
            "skus": c.skus, "nodes": c.nodes, "stock": c.stock, "hot_skus": c.hot_skus, "hot_stock": c.hot_stock,
            "zipf": c.zipf, "ttl_ms": c.ttl_ms,
        },
        "calls": calls,
        "outcomes": outcomes,
        "errors": outcome.stats.errors,
        "calls_per_second": outcome.stats.per_second,
        "errors_per_second": outcome.stats.errors_per_second,
        "verification": outcome.verification.as_ref().map(|v| json!({
            "passed": v.passed(),
            "inconclusive": v.inconclusive(),
            "counters_checked": v.counters_checked,
            "reserved_checked": v.reserved_checked,
            "on_hand_checked": v.on_hand_checked,
            "oversell_checked": v.oversell_checked,
            "resolved_by_retry": v.resolved_by_retry,
            "uncertain": v.uncertain,
            "mismatches": v.mismatches,
            "oversold": v.oversold,
            "unreadable": v.unreadable,
        })),
    })
}

fn polyline(points: &[(f64, f64)], width: f64, height: f64, x_max: f64, y_max: f64) -> String {
    let mut out = String::new();
    for (x, y) in points {
        let px = 50.0 + x / x_max.max(1e-9) * (width - 70.0);
        let py = height - 30.0 - y / y_max.max(1e-9) * (height - 50.0);
        let _ = write!(out, "{px:.1},{py:.1} ");
    }
    out
}

fn chart(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)], log_x: bool) -> String {
    let (width, height) = (760.0, 300.0);
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{title}</text>
<line x1="50" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="50" y1="20" x2="50" y2="{}" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">{y_label}</text>
"##,
        width / 2.0,
        height - 30.0,
        width - 20.0,
        height - 30.0,
        height - 30.0,
        width / 2.0,
        height - 5.0,
        height / 2.0,
        height / 2.0
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = height - 30.0 - f64::from(i) / 4.0 * (height - 50.0);
        let _ = write!(
            svg,
            r##"<text x="46" y="{y:.0}" text-anchor="end">{v:.0}</text>"##
        );
    }
    let label_x = |x: f64| {
        if log_x {
            format!("{:.3}%", 100.0 - 100.0 / 10f64.powf(x))
        } else {
            format!("{x:.0}")
        }
    };
    for i in 0..=4 {
        let x = x_max * f64::from(i) / 4.0;
        let px = 50.0 + f64::from(i) / 4.0 * (width - 70.0);
        let _ = write!(
            svg,
            r##"<text x="{px:.0}" y="{}" text-anchor="middle">{}</text>"##,
            height - 16.0,
            label_x(x)
        );
    }
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/></svg>"##,
        polyline(points, width, height, x_max, y_max)
    );
    svg
}

/// The HTML report: throughput over time and the latency distribution.
pub fn html(outcome: &Outcome) -> String {
    let throughput: Vec<(f64, f64)> = outcome
        .stats
        .per_second
        .iter()
        .enumerate()
        .map(|(s, n)| (s as f64, *n as f64))
        .collect();
    // Latency by percentile on a log scale of 1/(1-q): 90%, 99%, 99.9%...
    let h = &outcome.stats.all;
    let mut distribution = Vec::new();
    let mut x = 0.0;
    while x <= 4.0 {
        let q = 1.0 - 1.0 / 10f64.powf(x);
        distribution.push((x, h.value_at_quantile(q) as f64 / 1_000.0));
        x += 0.05;
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>stockraft load report</title>\
         <style>body{{font-family:sans-serif;max-width:800px;margin:2em auto}}pre{{background:#f6f8fa;padding:1em;overflow:auto}}</style>\
         </head><body><h1>stockraft load report</h1>{}{}<pre>{}</pre></body></html>",
        chart("Calls completed per second", "seconds", "calls/s", &throughput, false),
        chart("Latency distribution (all calls)", "percentile", "ms", &distribution, true),
        text(outcome).replace('&', "&amp;").replace('<', "&lt;")
    )
}
