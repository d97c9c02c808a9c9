use super::*;
use proptest::prelude::*;

const CAP: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Learn { rule: u64, ip: u32, ttl: u64 },
    Forget { rule: u64, ip: u32 },
    ForgetRule { rule: u64 },
    Clear,
    Pin { rule: u64, ip: u32 },
    Unpin { pick: usize },
    Sweep { budget: usize },
    Advance { dt: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let rule = 0u64..3;
    let ip = 0u32..6;
    prop_oneof![
        6 => (rule.clone(), ip.clone(), 0u64..40)
            .prop_map(|(rule, ip, ttl)| Op::Learn { rule, ip, ttl }),
        2 => (rule.clone(), ip.clone()).prop_map(|(rule, ip)| Op::Forget { rule, ip }),
        1 => rule.clone().prop_map(|rule| Op::ForgetRule { rule }),
        1 => Just(Op::Clear),
        4 => (rule, ip).prop_map(|(rule, ip)| Op::Pin { rule, ip }),
        3 => any::<usize>().prop_map(|pick| Op::Unpin { pick }),
        2 => (0usize..12).prop_map(|budget| Op::Sweep { budget }),
        3 => (0u64..25).prop_map(|dt| Op::Advance { dt }),
    ]
}

/// `(rule, ip) -> (expires_at, pins)`; holds exactly the entries that must match.
type Model = HashMap<(u64, u32), (u64, u32)>;

fn holds(&(exp, pins): &(u64, u32), now: u64) -> bool {
    exp > now || pins > 0
}

fn check(a: &Allowlist, model: &Model, now: u64) {
    assert!(a.len() <= a.capacity());
    for rule in 0..3 {
        for ip in 0..6 {
            let want = model.get(&(rule, ip)).is_some_and(|m| holds(m, now));
            let live = model.get(&(rule, ip)).is_some_and(|m| m.0 > now);
            assert_eq!(a.is_live(RuleKey(rule), ip, now), live);
            assert_eq!(a.contains(RuleKey(rule), ip, now), want, "({rule}, {ip}) at {now}");
        }
    }
    let mut present = 0;
    a.for_each(|rule, ip, exp, pins| {
        present += 1;
        match model.get(&(rule.0, ip)) {
            Some(&m) => assert_eq!((exp, pins), m, "({}, {ip})", rule.0),
            None => assert!(exp <= now && pins == 0, "unexpected live entry"),
        }
    });
    assert_eq!(present, a.len());
    let pinned = model.values().filter(|m| m.1 > 0).count();
    assert_eq!(a.stats().pinned, pinned);
    check_structure(a);
}

fn run(ops: Vec<Op>) {
    let (w, mut a) = single(CAP);
    let mut model = Model::new();
    let mut handles: Vec<((u64, u32), PinHandle)> = Vec::new();
    let mut now = 1u64;
    for op in ops {
        match op {
            Op::Learn { rule, ip, ttl } => {
                let exp = now + ttl;
                let drops = a.stats().full_drops;
                learn(&w, &mut a, now, RuleKey(rule), ip, exp);
                let dropped = a.stats().full_drops > drops;
                match model.get_mut(&(rule, ip)) {
                    Some(m) => {
                        assert!(!dropped, "refresh of a held entry dropped");
                        m.0 = m.0.max(exp);
                    }
                    None if exp <= now => assert!(!dropped),
                    None if dropped => assert_eq!(a.len(), CAP, "dropped with room"),
                    None => {
                        model.insert((rule, ip), (exp, 0));
                    }
                }
            }
            Op::Forget { rule, ip } => {
                let update = AllowlistUpdate::Forget { rule: RuleKey(rule), ip };
                apply(&w, &mut a, now, update);
                if let Some(m) = model.get_mut(&(rule, ip)) {
                    m.0 = 0;
                }
            }
            Op::ForgetRule { rule } => {
                let update = AllowlistUpdate::ForgetRule { rule: RuleKey(rule) };
                apply(&w, &mut a, now, update);
                model.iter_mut().filter(|(k, _)| k.0 == rule).for_each(|(_, m)| m.0 = 0);
            }
            Op::Clear => {
                apply(&w, &mut a, now, AllowlistUpdate::Clear);
                model.values_mut().for_each(|m| m.0 = 0);
            }
            // As the engine does: pin what `contains` just admitted.
            Op::Pin { rule, ip } => {
                if a.contains(RuleKey(rule), ip, now) {
                    let h = a.pin(RuleKey(rule), ip).expect("pin of a held entry");
                    assert_ne!(h.0, u32::MAX);
                    let m = model.get_mut(&(rule, ip)).unwrap();
                    m.1 += 1;
                    // Flow records keep the raw form.
                    handles.push(((rule, ip), PinHandle::from_raw(h.to_raw())));
                }
            }
            Op::Unpin { pick } => {
                if !handles.is_empty() {
                    let (key, h) = handles.swap_remove(pick % handles.len());
                    a.unpin(h);
                    model.get_mut(&key).unwrap().1 -= 1;
                }
            }
            Op::Sweep { budget } => {
                let len = a.len();
                let removed = a.sweep(now, budget);
                assert!(removed <= budget);
                assert_eq!(a.len(), len - removed);
            }
            Op::Advance { dt } => now += dt,
        }
        // Entries that are expired and unpinned may or may not still be present.
        model.retain(|_, m| holds(m, now));
        check(&a, &model, now);
    }
    // Every handle is still valid: release them all and the table empties.
    for (key, h) in handles {
        a.unpin(h);
        model.get_mut(&key).unwrap().1 -= 1;
    }
    apply(&w, &mut a, now, AllowlistUpdate::Clear);
    assert!(a.is_empty());
    assert_eq!(a.stats().pinned, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn allowlist_matches_hashmap_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops);
    }
}
