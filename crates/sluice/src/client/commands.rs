//! The client commands. Each resolves its target, sends its requests, and returns what to
//! print on stdout (errors and notes go to stderr in `main`).

use serde_json::{json, Value};

use super::endpoint::{socket_failure, Endpoint};
use super::render;
use crate::cli::{AuditArgs, ExplainArgs, MintArgs, PolicyCommand, SettingsArgs, StatusArgs, TokenCommand};
use crate::config::DEFAULT_DATA_DIR;
use crate::exit::{Exit, Failure};
use crate::policy_cmd;

/// What a client command prints on success, or its failure.
pub type Output = Result<String, Failure>;

/// Percent-encodes a query value or path segment (RFC 3986 unreserved characters pass).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends a request and returns the JSON of a successful answer, or the refusal.
pub fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<String>,
    policy_exit: Option<Exit>,
) -> Result<Value, Failure> {
    let answer = endpoint.request(method, path, body)?;
    if !answer.is_success() {
        return Err(render::refusal(&answer, policy_exit));
    }
    Ok(answer.json())
}

fn read_file(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Exit::PolicyRejected, format!("cannot read policy file {}: {e}", path.display())))
}

/// `sluice status`: readiness needs no token, so a node that refuses the token still shows
/// whether it is ready before the command fails.
pub fn status(args: &StatusArgs) -> Output {
    let endpoint = Endpoint::from_target(&args.target)?;
    let ready = endpoint.request("GET", "/ready", None)?;
    if ready.status != 200 && ready.status != 503 {
        return Err(render::refusal(&ready, None));
    }
    let ready = ready.json();
    let stats = call(&endpoint, "GET", "/api/v1/stats", None, None);
    if args.target.json {
        let stats = stats?;
        return Ok(render::pretty(&json!({ "ready": ready, "stats": stats })));
    }
    match stats {
        Ok(stats) => {
            let text = render::status(&ready, Some(&stats));
            if ready["ready"].as_bool() == Some(true) {
                Ok(text)
            } else {
                Err(Failure::new(Exit::Refused, text))
            }
        }
        Err(f) => Err(Failure::new(f.exit, format!("{}\nstats: {}", render::status(&ready, None), f.message))),
    }
}

pub fn policy(command: &PolicyCommand) -> Output {
    match command {
        PolicyCommand::Get { version, target } => {
            let endpoint = Endpoint::from_target(target)?;
            let path = version.map_or_else(|| "/api/v1/policy".to_owned(), |n| format!("/api/v1/policy/versions/{n}"));
            let body = call(&endpoint, "GET", &path, None, None)?;
            if target.json {
                return Ok(render::pretty(&body));
            }
            eprintln!(
                "version {} ({}), created {} by {}{}",
                body["version"],
                if body["active"].as_bool() == Some(true) { "active" } else { "not active" },
                render::timestamp(&body["created_at_ms"]),
                body["created_by"].as_str().unwrap_or("-"),
                body["comment"].as_str().filter(|c| !c.is_empty()).map(|c| format!(": {c}")).unwrap_or_default()
            );
            Ok(render::pretty(&body["document"]))
        }
        PolicyCommand::Put { file, comment, target } => {
            let document = read_file(file)?;
            let endpoint = Endpoint::from_target(target)?;
            let path = match comment {
                Some(c) => format!("/api/v1/policy?comment={}", encode(c)),
                None => "/api/v1/policy".to_owned(),
            };
            let body = call(&endpoint, "PUT", &path, Some(document), Some(Exit::PolicyRejected))?;
            if target.json {
                return Ok(render::pretty(&body));
            }
            let applied = if body["applied"].as_bool() == Some(true) {
                "the dataplane runs it"
            } else {
                "not yet running in the dataplane (see sluice status)"
            };
            Ok(format!("stored as version {}; {applied}", body["version"]))
        }
        PolicyCommand::Versions { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "GET", "/api/v1/policy/versions", None, None)?;
            Ok(if target.json { render::pretty(&body) } else { render::versions(&body) })
        }
        PolicyCommand::Rollback { to, target } => {
            let endpoint = Endpoint::from_target(target)?;
            let request = json!({ "version": to }).to_string();
            let body = call(&endpoint, "POST", "/api/v1/policy/rollback", Some(request), None)?;
            if target.json {
                return Ok(render::pretty(&body));
            }
            Ok(format!("version {} is active again (was {})", body["version"], body["previous"]))
        }
        PolicyCommand::Validate { file, target } => {
            if target.api.is_none() {
                return policy_cmd::validate(file);
            }
            let document = read_file(file)?;
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "POST", "/api/v1/policy/validate", Some(document), Some(Exit::PolicyRejected))?;
            if target.json {
                return Ok(render::pretty(&body));
            }
            Ok(format!(
                "OK (checked by {}): {} source groups, {} rules",
                target.api.as_deref().unwrap_or("-"),
                body["groups"],
                body["rules"]
            ))
        }
        PolicyCommand::Explain(args) => explain(args),
    }
}

fn explain(args: &ExplainArgs) -> Output {
    if let Some(file) = &args.file {
        if args.target.api.is_some() || args.version.is_some() {
            return Err(Failure::new(
                Exit::Usage,
                "a FILE is explained here, offline; a node explains its stored versions: give either FILE, \
                 or --api/--version without FILE",
            ));
        }
        return policy_cmd::explain(file, args);
    }
    let endpoint = Endpoint::from_target(&args.target)?;
    let request = json!({
        "src": args.src, "dst": args.dst, "proto": args.proto, "dst_port": args.port,
        "icmp_type": args.icmp_type, "hostname": args.hostname, "version": args.version,
    });
    let body = call(&endpoint, "POST", "/api/v1/policy/explain", Some(request.to_string()), None)?;
    Ok(if args.target.json { render::pretty(&body) } else { render::explanation(&body, args.hostname.as_deref()) })
}

pub fn token(command: &TokenCommand) -> Output {
    match command {
        TokenCommand::Mint(args) => mint(args),
        TokenCommand::List { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "GET", "/api/v1/tokens", None, None)?;
            Ok(if target.json { render::pretty(&body) } else { render::tokens(&body) })
        }
        TokenCommand::Revoke { id, target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "DELETE", &format!("/api/v1/tokens/{}", encode(id)), None, None)?;
            Ok(if target.json { render::pretty(&body) } else { format!("token {id} revoked") })
        }
    }
}

/// `sluice settings`: shown without change flags, changed (admin) with them.
pub fn settings(args: &SettingsArgs) -> Output {
    let endpoint = Endpoint::from_target(&args.target)?;
    let changing = args.policy_history_limit.is_some() || args.audit_log_limit.is_some();
    let body = if changing {
        let change = json!({
            "policy_history_limit": args.policy_history_limit,
            "audit_log_limit": args.audit_log_limit,
        });
        call(&endpoint, "PUT", "/api/v1/settings", Some(change.to_string()), None)?
    } else {
        call(&endpoint, "GET", "/api/v1/settings", None, None)?
    };
    Ok(if args.target.json { render::pretty(&body) } else { render::settings(&body) })
}

/// `sluice audit`: the newest entries first.
pub fn audit(args: &AuditArgs) -> Output {
    let endpoint = Endpoint::from_target(&args.target)?;
    let mut path = format!("/api/v1/audit?limit={}", args.limit);
    if let Some(before) = args.before {
        path.push_str(&format!("&before={before}"));
    }
    let body = call(&endpoint, "GET", &path, None, None)?;
    Ok(if args.target.json { render::pretty(&body) } else { render::audit(&body) })
}

/// Without `--api`, the admin socket's own `mint_token` (the break-glass path, which works
/// even before any token exists); with it, `POST /api/v1/tokens` with an admin token. The
/// secret goes to stdout alone so a script can capture it; the id and role to stderr.
fn mint(args: &MintArgs) -> Output {
    let (id, role, secret, body) = if args.target.api.is_none() {
        let data_dir = args.target.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let minted = crate::token_cmd::mint_over_socket(args, &data_dir).map_err(|e| socket_failure(&e, &data_dir))?;
        let body = json!({ "id": minted.id, "role": minted.role, "token": minted.token });
        (minted.id, minted.role, minted.token, body)
    } else {
        let endpoint = Endpoint::from_target(&args.target)?;
        let request = json!({
            "role": args.role,
            "id": args.id,
            "label": args.label,
            "expires_in_s": args.expires_in_s,
            "secret_sha256": args.secret_sha256,
        });
        let body = call(&endpoint, "POST", "/api/v1/tokens", Some(request.to_string()), None)?;
        let field = |name: &str| body[name].as_str().unwrap_or("").to_owned();
        (field("id"), field("role"), body["token"].as_str().map(str::to_owned), body)
    };
    if args.target.json {
        return Ok(render::pretty(&body));
    }
    match secret {
        Some(secret) => {
            eprintln!("minted token {id} (role {role}); the secret below is shown only now");
            Ok(secret)
        }
        None => {
            eprintln!("registered token {id} (role {role}) for the secret whose SHA-256 was given");
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("tok-ci_1.a~"), "tok-ci_1.a~");
        assert_eq!(encode("allow echo & ntp/2"), "allow%20echo%20%26%20ntp%2F2");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
