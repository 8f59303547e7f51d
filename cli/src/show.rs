//! What `status`, `leader` and `elect --observe` print: one line of text, or one JSON object
//! (through `serde_json`) per line.

use leasehold::backend::KeyValue;
use leasehold::LeaderInfo;
use serde_json::{json, Value};

/// A leader state: `leader <value> token=… key=…` or `no leader`; in JSON
/// `{"leader":…,"token":…,"key":…,"lease":"<hex>"}` or `{"leader":null}`.
pub fn describe(leader: &Option<LeaderInfo>, as_json: bool) -> String {
    match (leader, as_json) {
        (None, false) => "no leader".into(),
        (None, true) => json!({ "leader": null }).to_string(),
        (Some(l), false) => format!("leader {} token={} key={}", printable(&l.value), l.token, l.key),
        (Some(l), true) => json!({
            "leader": String::from_utf8_lossy(&l.value),
            "token": l.token,
            "key": l.key,
            "lease": format!("{:x}", l.lease),
        })
        .to_string(),
    }
}

/// A candidate's value as text on one line: control characters escaped (`\n`, `\u{1b}`),
/// so that a value cannot forge lines of `leader` or `elect --observe` (a candidate with
/// `--value $'x\nleader evil token=1'` did, until 2026-12-05); JSON output is escaped by
/// serde.
fn printable(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
        .collect()
}

/// The permit count stored with a semaphore of this name (its count key's value), if the
/// name is a semaphore's.
pub fn stored_permits(count: Option<&KeyValue>) -> Option<u32> {
    let kv = count?;
    std::str::from_utf8(&kv.value).ok()?.parse::<u32>().ok().filter(|&n| n > 0)
}

/// How many of a name's entries (oldest first) hold it: for a semaphore of `permits`, the
/// oldest whose weights (a key's value: empty for 1, else a decimal count) sum to at most
/// `permits`; for a read-write lock (keys under `read/` and `write/`) the readers at the
/// head, or the one writer there; otherwise the first (a lock's holder, an election's
/// leader).
pub fn holding(entries: &[KeyValue], prefix: &str, permits: Option<u32>) -> usize {
    let rest = |kv: &KeyValue| kv.key[prefix.len()..].to_owned();
    if let Some(n) = permits {
        let mut sum = 0u64;
        return entries
            .iter()
            .take_while(|kv| {
                sum = sum.saturating_add(weight(&kv.value));
                sum <= u64::from(n)
            })
            .count();
    }
    if entries.iter().any(|kv| rest(kv).starts_with("read/") || rest(kv).starts_with("write/")) {
        return match entries.first() {
            Some(kv) if rest(kv).starts_with("write/") => 1,
            _ => entries.iter().take_while(|kv| rest(kv).starts_with("read/")).count(),
        };
    }
    entries.len().min(1)
}

/// A semaphore key's weight, as the library counts it: empty is 1, a decimal count is
/// itself, anything else more than any count.
fn weight(value: &[u8]) -> u64 {
    if value.is_empty() {
        return 1;
    }
    std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok()).filter(|&w| w > 0).unwrap_or(u64::MAX)
}

/// `leasehold status`: a summary line and one line per entry, or one JSON object.
pub fn status(name: &str, entries: &[KeyValue], holding: usize, permits: Option<u32>, as_json: bool) -> String {
    let (held, waiting) = entries.split_at(holding);
    if as_json {
        let list = |kvs: &[KeyValue]| -> Value {
            kvs.iter()
                .map(|kv| json!({ "token": kv.create_revision, "lease": format!("{:x}", kv.lease), "key": kv.key }))
                .collect()
        };
        let mut out = json!({ "name": name, "holding": list(held), "waiting": list(waiting) });
        if let Some(n) = permits {
            out["permits"] = json!(n);
        }
        return out.to_string();
    }
    let mut out = if entries.is_empty() {
        format!("{name}: free")
    } else {
        format!("{name}: {} holding, {} waiting", held.len(), waiting.len())
    };
    if let Some(n) = permits {
        out.push_str(&format!(" ({n} permits)"));
    }
    for (role, kvs) in [("holding", held), ("waiting", waiting)] {
        for kv in kvs {
            out.push_str(&format!("\n{role} token={} lease={:x} key={}", kv.create_revision, kv.lease, kv.key));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(suffixes: &[&str]) -> Vec<KeyValue> {
        suffixes
            .iter()
            .enumerate()
            .map(|(i, s)| KeyValue {
                key: format!("ns/x/{s}"),
                value: Vec::new(),
                create_revision: 10 + i as i64,
                mod_revision: 10 + i as i64,
                lease: 0x1f,
            })
            .collect()
    }

    #[test]
    fn holding_follows_each_recipes_rule() {
        let p = "ns/x/";
        assert_eq!(holding(&entries(&[]), p, None), 0);
        assert_eq!(holding(&entries(&["a", "b", "c"]), p, None), 1, "a lock or an election: the first");
        assert_eq!(holding(&entries(&["a", "b", "c"]), p, Some(2)), 2, "a semaphore: the first N");
        assert_eq!(holding(&entries(&["a"]), p, Some(3)), 1);
        let mut weighted = entries(&["a", "b", "c"]);
        weighted[1].value = b"2".to_vec();
        assert_eq!(holding(&weighted, p, Some(2)), 1, "a semaphore: weights count (1 + 2 > 2)");
        assert_eq!(holding(&weighted, p, Some(4)), 3);
        let rw = entries(&["read/a-0", "read/b-0", "write/c-0", "read/d-0"]);
        assert_eq!(holding(&rw, p, None), 2, "readers at the head share; a reader behind a writer waits");
        assert_eq!(holding(&entries(&["write/a-0", "read/b-0"]), p, None), 1, "a writer at the head holds alone");
        let text = status("x", &rw, 2, None, false);
        assert_eq!(text.lines().next(), Some("x: 2 holding, 2 waiting"));
        assert_eq!(text.lines().nth(3), Some("waiting token=12 lease=1f key=ns/x/write/c-0"));
    }

    #[test]
    fn json_is_escaped_by_serde() {
        let kv =
            KeyValue { key: "a\"b".into(), value: b"v\n1".to_vec(), create_revision: 3, mod_revision: 3, lease: 0xff };
        let leader = LeaderInfo::from(&kv);
        let text =
            describe(&Some(LeaderInfo::from(&KeyValue { value: b"x\nleader evil\x1b".to_vec(), ..kv.clone() })), false);
        assert_eq!(text, "leader x\\nleader evil\\u{1b} token=3 key=a\"b", "one line, control characters escaped");
        let line = describe(&Some(leader), true);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["leader"], "v\n1");
        assert_eq!(v["key"], "a\"b");
        assert_eq!(v["lease"], "ff");
        let out: Value = serde_json::from_str(&status("x", std::slice::from_ref(&kv), 1, Some(2), true)).unwrap();
        assert_eq!(out["permits"], 2);
        assert_eq!(out["holding"][0]["token"], 3);
        assert_eq!(stored_permits(Some(&KeyValue { value: b"3".to_vec(), ..kv.clone() })), Some(3));
        assert_eq!(stored_permits(Some(&KeyValue { value: b"x".to_vec(), ..kv })), None);
    }
}
