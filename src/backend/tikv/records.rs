//! How the backend lays out its data in TiKV's key space (under `<root>`) and encodes
//! its records: keys and values with their revisions and lease, lease records, change-log
//! entries. Plain functions, no I/O.

use super::*;

pub(super) struct Keys {
    pub(super) root: Vec<u8>,
}

pub(super) fn hex16(n: u64) -> String {
    format!("{n:016x}")
}

impl Keys {
    pub(super) fn with(&self, tag: &str, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.root.len() + tag.len() + rest.len());
        k.extend_from_slice(&self.root);
        k.extend_from_slice(tag.as_bytes());
        k.extend_from_slice(rest);
        k
    }
    pub(super) fn kv(&self, key: &str) -> Vec<u8> {
        self.with("k/", key.as_bytes())
    }
    pub(super) fn rev(&self) -> Vec<u8> {
        self.with("m/rev", b"")
    }
    pub(super) fn compacted(&self) -> Vec<u8> {
        self.with("m/compacted", b"")
    }
    pub(super) fn log(&self, rev: Revision) -> Vec<u8> {
        self.with("g/", hex16(rev as u64).as_bytes())
    }
    pub(super) fn lease(&self, id: LeaseId) -> Vec<u8> {
        self.with("l/", hex16(id as u64).as_bytes())
    }
    pub(super) fn expiry(&self, at_ms: u64, id: LeaseId) -> Vec<u8> {
        self.with("e/", format!("{}/{}", hex16(at_ms), hex16(id as u64)).as_bytes())
    }
    pub(super) fn expiry_upto(&self, at_ms: u64) -> Vec<u8> {
        self.with("e/", hex16(at_ms).as_bytes())
    }
    pub(super) fn attached(&self, id: LeaseId, key: &str) -> Vec<u8> {
        self.with("x/", format!("{}/{key}", hex16(id as u64)).as_bytes())
    }
    pub(super) fn txn_lock(&self, name: &str) -> Vec<u8> {
        self.with("t/", name.as_bytes())
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

pub(super) fn corrupt(what: &str) -> Error {
    Error::Store(format!("tikv: corrupt {what} record").into())
}

pub(super) struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    pub(super) fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_be_bytes(*head))
    }
    pub(super) fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u64()? as usize;
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head.to_vec())
    }
}

pub(super) fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_be_bytes());
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

pub(super) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(24 + kv.value.len());
    put_u64(&mut buf, kv.create_revision as u64);
    put_u64(&mut buf, kv.mod_revision as u64);
    put_u64(&mut buf, kv.lease as u64);
    buf.extend_from_slice(&kv.value);
    buf
}

pub(super) fn decode_kv(key: String, raw: &[u8]) -> Result<KeyValue> {
    let mut rd = Rd(raw);
    let (Some(c), Some(m), Some(l)) = (rd.u64(), rd.u64(), rd.u64()) else { return Err(corrupt("key")) };
    Ok(KeyValue { key, value: rd.0.to_vec(), create_revision: c as i64, mod_revision: m as i64, lease: l as i64 })
}

pub(super) fn decode_u64(raw: Option<Vec<u8>>) -> Result<u64> {
    match raw {
        None => Ok(0),
        Some(v) => Rd(&v).u64().ok_or_else(|| corrupt("counter")),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct LeaseRec {
    pub(super) ttl_ms: u64,
    pub(super) expires_ms: u64,
}

pub(super) fn encode_lease(l: LeaseRec) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    put_u64(&mut buf, l.ttl_ms);
    put_u64(&mut buf, l.expires_ms);
    buf
}

pub(super) fn decode_lease(raw: &[u8]) -> Result<LeaseRec> {
    let mut rd = Rd(raw);
    match (rd.u64(), rd.u64()) {
        (Some(ttl_ms), Some(expires_ms)) => Ok(LeaseRec { ttl_ms, expires_ms }),
        _ => Err(corrupt("lease")),
    }
}

pub(super) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in events {
        match e {
            WatchEvent::Put(kv) => {
                buf.push(0);
                put_bytes(&mut buf, kv.key.as_bytes());
                put_u64(&mut buf, kv.create_revision as u64);
                put_u64(&mut buf, kv.lease as u64);
                put_bytes(&mut buf, &kv.value);
            }
            WatchEvent::Delete { key, .. } => {
                buf.push(1);
                put_bytes(&mut buf, key.as_bytes());
            }
        }
    }
    buf
}

pub(super) fn decode_events(rev: Revision, raw: &[u8]) -> Result<Vec<WatchEvent>> {
    let mut rd = Rd(raw);
    let mut out = Vec::new();
    while let Some((&tag, rest)) = rd.0.split_first() {
        rd.0 = rest;
        let key = rd.bytes().and_then(|k| String::from_utf8(k).ok()).ok_or_else(|| corrupt("log"))?;
        out.push(match tag {
            0 => {
                let (Some(c), Some(l), Some(value)) = (rd.u64(), rd.u64(), rd.bytes()) else {
                    return Err(corrupt("log"));
                };
                WatchEvent::Put(KeyValue { key, value, create_revision: c as i64, mod_revision: rev, lease: l as i64 })
            }
            1 => WatchEvent::Delete { key, revision: rev },
            _ => return Err(corrupt("log")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let kv =
            KeyValue { key: "a/b".into(), value: b"v\x00".to_vec(), create_revision: 7, mod_revision: 9, lease: 42 };
        assert_eq!(decode_kv("a/b".into(), &encode_kv(&kv)).unwrap(), kv);
        let events = vec![WatchEvent::Put(kv.clone()), WatchEvent::Delete { key: "a/c".into(), revision: 9 }];
        assert_eq!(decode_events(9, &encode_events(&events)).unwrap(), events);
        assert!(decode_events(9, &encode_events(&events)[..5]).is_err());
        let l = decode_lease(&encode_lease(LeaseRec { ttl_ms: 3, expires_ms: 5 })).unwrap();
        assert_eq!((l.ttl_ms, l.expires_ms), (3, 5));
    }

    #[test]
    fn key_layout_orders_numbers() {
        let keys = Keys { root: b"r/".to_vec() };
        assert!(keys.log(9) < keys.log(10) && keys.log(255) < keys.log(256));
        assert!(keys.expiry(99, 1) < keys.expiry_upto(100) && keys.expiry_upto(100) <= keys.expiry(100, 0));
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        let p = keys.kv("p/");
        assert!(keys.kv("p/x") < prefix_end(&p) && keys.kv("q") >= prefix_end(&p));
    }
}
