use std::hint::black_box;
use std::time::Instant;
use serde_json::json;
use sluice_policy::*;

struct L;
impl LearnedLookup for L { fn is_learned(&self, r: RuleKey, d: u32) -> bool { (r.0 ^ d as u64) & 7 == 0 } }

fn main() {
    big();
    let mut groups = vec![];
    for g in 0..200u32 {
        let mut rules = vec![];
        for r in 0..20u32 {
            let m = match r % 4 {
                0 => json!({"proto":"tcp","dst_ports":[443 + r, format!("{}-{}", 8000 + r*10, 8005 + r*10)], "dst_cidrs":[format!("203.0.{}.0/24", r)]}),
                1 => json!({"proto":"udp","dst_ports":[53, 123 + r]}),
                2 => json!({"proto":"tcp","dst_ports":[443], "hostnames":[format!("h{g}-{r}.example.com"), "*.cdn.example.com"]}),
                _ => json!({"proto":"icmp","icmp_types":[8, r as u8]}),
            };
            rules.push(json!({"id": format!("r{r}"), "action": if r % 5 == 0 {"deny"} else {"allow"}, "match": m}));
        }
        // Overlapping sources: every /24 in 10.(g/8).0.0/16, plus a wide group every 50.
        let cidr = if g % 50 == 0 { format!("10.0.0.0/{}", 8 + g / 50) } else { format!("10.{}.{}.0/24", g / 8, g % 256) };
        groups.push(json!({"id": format!("g{g}"), "priority": g, "sources": {"cidrs":[cidr]}, "rules": rules}));
    }
    let doc = json!({"default_action":"deny","source_groups":groups}).to_string();
    let t = Instant::now();
    let p = compile_json(&doc).unwrap();
    println!("compile: {:?} {:?}", t.elapsed(), p.index_size());
    let mut queries = vec![];
    let mut x: u64 = 12345;
    for _ in 0..4096 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let src = u32::from_be_bytes([10, (x >> 20) as u8 % 30, (x >> 28) as u8, (x >> 36) as u8]);
        let proto = [6u8, 17, 1, 47][(x >> 44) as usize % 4];
        queries.push(FlowQuery { src, dst: (x >> 8) as u32, proto, dst_port: [443u16, 53, 8003, 22, 80][(x >> 50) as usize % 5], icmp_type: 8 });
    }
    let n = 2_000_000;
    let t = Instant::now();
    let mut allowed = 0;
    for i in 0..n { if p.evaluate(black_box(&queries[i % queries.len()]), &L).allowed() { allowed += 1; } }
    println!("evaluate: {:.1} ns/flow (allowed {allowed})", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for i in 0..200_000u32 { black_box(p.dns_decision(u32::from_be_bytes([10, (i % 25) as u8, 1, 1]), black_box("img.eu.cdn.example.com."))); }
    println!("dns: {:.1} ns/query", t.elapsed().as_nanos() as f64 / 200_000.0);
}

fn big() {
    let mut groups = vec![];
    for g in 0..10000u32 {
        let rules: Vec<_> = (0..10u32).map(|r| json!({"id": format!("r{r}"), "action":"allow", "match": {"proto":"tcp","dst_ports":[r+1, format!("{}-{}", 1000+r, 2000+r)], "dst_cidrs":[format!("192.0.{}.0/24", r)]}})).collect();
        groups.push(json!({"id": format!("g{g}"), "priority": g, "sources": {"cidrs":[format!("10.{}.{}.0/24", g/256, g%256)]}, "rules": rules}));
    }
    let doc = json!({"source_groups":groups}).to_string();
    let t = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    println!("json only: {:?}", t.elapsed());
    drop(v);
    let t = Instant::now();
    let d = parse_policy(&doc).unwrap();
    println!("parse_policy: {:?}", t.elapsed());
    let t = Instant::now();
    let _ = compile(&d).unwrap();
    println!("compile(doc): {:?}", t.elapsed());
    let t = Instant::now();
    let p = compile_json(&doc).unwrap();
    println!("big compile ({} bytes): {:?} {:?}", doc.len(), t.elapsed(), p.index_size());
    let t = Instant::now();
    let q = FlowQuery { src: u32::from_be_bytes([10,9,9,9]), dst: 1, proto: 6, dst_port: 22, icmp_type: 0 };
    for _ in 0..100_000 { black_box(p.evaluate(black_box(&q), &L)); }
    println!("big evaluate, 2 candidates: {:.1} ns", t.elapsed().as_nanos() as f64 / 100_000.0);
}
