//! The Prometheus text page. Metric names are stable (documented in `docs/api.md`); what
//! varies with the runtime's counters is only label values, so a dashboard never breaks when
//! a counter is added.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sluice_up` | gauge | |
//! | `sluice_ready` | gauge | `check` |
//! | `sluice_uptime_seconds` | gauge | |
//! | `sluice_dataplane_events_total` | counter | `counter` |
//! | `sluice_dns_events_total` | counter | `counter` |
//! | `sluice_port_events_total` | counter | `port`, `counter` |
//! | `sluice_node_gauge` | gauge | `name` |
//! | `sluice_policy_active_version` | gauge | |
//! | `sluice_policy_applied_version` | gauge | |
//! | `sluice_policy_versions_stored` | gauge | |
//! | `sluice_store_applied_index` | gauge | |
//! | `sluice_store_leader` | gauge | (1 when this node leads) |
//! | `sluice_api_tokens` | gauge | `role` |
//! | `sluice_http_requests_total` | counter | `route`, `method`, `status` |
//! | `sluice_http_request_duration_seconds_sum` | counter | `route`, `method`, `status` |

use std::fmt::Write;

use crate::routes::health::readiness;
use crate::state::AppState;

pub fn render(state: &AppState) -> String {
    let shared = &state.inner;
    let mut out = String::with_capacity(4096);
    gauge(&mut out, "sluice_up", "1 while the API answers", &[(vec![], 1.0)]);
    let ready = readiness(state);
    let ready_samples: Vec<_> =
        ready.checks.iter().map(|(name, c)| (vec![("check", name.as_str())], f64::from(u8::from(c.ok)))).collect();
    gauge(&mut out, "sluice_ready", "1 when the named readiness check passes", &ready_samples);
    gauge(
        &mut out,
        "sluice_uptime_seconds",
        "seconds since the API started",
        &[(vec![], shared.started.elapsed().as_secs_f64())],
    );

    let counters = shared.node.counters();
    let named = |list: &[(String, u64)]| -> Vec<(Vec<(&str, String)>, f64)> {
        list.iter().map(|(name, value)| (vec![("counter", name.clone())], *value as f64)).collect()
    };
    counter_owned(
        &mut out,
        "sluice_dataplane_events_total",
        "dataplane counters by name, summed over workers",
        &named(&counters.dataplane),
    );
    counter_owned(&mut out, "sluice_dns_events_total", "DNS proxy counters by name", &named(&counters.dns));
    let ports: Vec<_> = counters
        .ports
        .iter()
        .flat_map(|(port, list)| {
            list.iter().map(move |(name, v)| (vec![("port", port.clone()), ("counter", name.clone())], *v as f64))
        })
        .collect();
    counter_owned(&mut out, "sluice_port_events_total", "port counters by port and name", &ports);
    let gauges: Vec<_> = counters.gauges.iter().map(|(name, v)| (vec![("name", name.clone())], *v as f64)).collect();
    gauge_owned(&mut out, "sluice_node_gauge", "current sizes on this node by name", &gauges);

    let (active, stored, tokens_admin, tokens_readonly) = shared.store.read(|s| {
        let (admin, readonly) = s.tokens().fold((0u64, 0u64), |(a, r), t| match t.role {
            sluice_store::state::Role::Admin => (a + 1, r),
            sluice_store::state::Role::Readonly => (a, r + 1),
        });
        (s.active_policy().map(|p| p.version), s.policy_versions().count(), admin, readonly)
    });
    let applied = *shared.node.applied_policy_version().borrow();
    let status = shared.store.status();
    gauge(
        &mut out,
        "sluice_policy_active_version",
        "active policy version in the store (0: none)",
        &[(vec![], active.unwrap_or(0) as f64)],
    );
    gauge(
        &mut out,
        "sluice_policy_applied_version",
        "policy version the dataplane runs (0: none)",
        &[(vec![], applied.unwrap_or(0) as f64)],
    );
    gauge(&mut out, "sluice_policy_versions_stored", "policy versions kept in history", &[(vec![], stored as f64)]);
    gauge(
        &mut out,
        "sluice_store_applied_index",
        "last log index applied on this node",
        &[(vec![], status.applied_index as f64)],
    );
    let leads = f64::from(u8::from(status.leader == Some(status.node_id)));
    gauge(&mut out, "sluice_store_leader", "1 when this node leads the store's Raft group", &[(vec![], leads)]);
    gauge(
        &mut out,
        "sluice_api_tokens",
        "API tokens by role",
        &[(vec![("role", "admin")], tokens_admin as f64), (vec![("role", "readonly")], tokens_readonly as f64)],
    );

    let http = shared.http.lock().unwrap_or_else(|p| p.into_inner());
    let mut requests = Vec::new();
    let mut seconds = Vec::new();
    for ((route, method, status), c) in &http.requests {
        let labels = vec![("route", route.clone()), ("method", method.clone()), ("status", status.to_string())];
        requests.push((labels.clone(), c.count as f64));
        seconds.push((labels, c.seconds_sum));
    }
    drop(http);
    counter_owned(&mut out, "sluice_http_requests_total", "API requests answered", &requests);
    counter_owned(
        &mut out,
        "sluice_http_request_duration_seconds_sum",
        "total seconds spent answering API requests",
        &seconds,
    );
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample<L: AsRef<str>>(out: &mut String, name: &str, labels: &[(&str, L)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(value.as_ref()));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
    family(out, name, help, "gauge");
    for (labels, value) in samples {
        sample(out, name, labels, *value);
    }
}

fn gauge_owned(out: &mut String, name: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
    family(out, name, help, "gauge");
    for (labels, value) in samples {
        sample(out, name, labels, *value);
    }
}

fn counter_owned(out: &mut String, name: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
    family(out, name, help, "counter");
    for (labels, value) in samples {
        sample(out, name, labels, *value);
    }
}

/// Label values escape backslash, quote and newline (the text format's rule).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
