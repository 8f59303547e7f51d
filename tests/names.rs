//! Property tests of name and key handling: arbitrary input gives a valid key or a typed
//! error, never a panic; valid names give keys that round-trip and never nest.

use leasehold::{
    validate_name, Client, Election, Error, Mutex, RwLock, Semaphore, Session, Strategy as LockStrategy, MAX_NAME_LEN,
};
use proptest::prelude::*;
use std::sync::OnceLock;

/// One memory session for every case (its lease is renewed by this runtime).
fn session() -> &'static Session {
    static SESSION: OnceLock<(tokio::runtime::Runtime, Session)> = OnceLock::new();
    &SESSION
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let session = rt.block_on(Client::memory().session()).unwrap();
            (rt, session)
        })
        .1
}

/// The rule, written independently of the implementation.
fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:@+=".contains(&b))
}

/// Names: anything at all, near-valid ones (the allowed alphabet plus '/', '.', a space
/// and a non-ASCII letter), and lengths around the limit.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9._:@+=/ é-]{0,12}",
        "[a-z.]{0,3}",
        "[a-z]{195,205}",
        Just(".".to_owned()),
        Just("..".to_owned()),
    ]
}

fn valid_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:@+=-]{1,24}".prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9]{1,6}/", "[a-z0-9/._-]{0,10}", any::<String>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `validate_name` agrees with the rule and says what it refused.
    #[test]
    fn validate_name_is_total(name in any_name()) {
        match validate_name(&name) {
            Ok(n) => {
                prop_assert!(is_valid(&name), "accepted {name:?}");
                prop_assert_eq!(n, name.as_str());
            }
            Err(Error::InvalidName { name: given, reason }) => {
                prop_assert!(!is_valid(&name), "refused {name:?}: {reason}");
                prop_assert_eq!(given, name);
                prop_assert!(!reason.is_empty());
            }
            Err(other) => prop_assert!(false, "untyped error {other:?}"),
        }
    }

    /// `prefix_of` is `<namespace><name>/` for valid names and round-trips; every recipe
    /// constructor accepts exactly the valid names, and its keys live under that prefix.
    #[test]
    fn recipe_keys_round_trip(ns in namespace(), name in any_name(), permits in any::<u32>()) {
        let client = session().client().with_namespace(ns.clone());
        let s = session();
        match client.prefix_of(&name) {
            Ok(prefix) => {
                prop_assert!(is_valid(&name));
                prop_assert_eq!(&prefix, &format!("{ns}{name}/"));
                let back = prefix.strip_prefix(ns.as_str()).and_then(|p| p.strip_suffix('/'));
                prop_assert_eq!(back, Some(name.as_str()));
            }
            Err(e) => {
                prop_assert!(!is_valid(&name));
                prop_assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
            }
        }
        // The recipes build their keys from the session's client (no namespace here).
        let prefix = s.client().prefix_of(&name);
        match (Mutex::new(s, &name), &prefix) {
            (Ok(m), Ok(p)) => {
                prop_assert_eq!(m.key(), format!("{p}{:x}", s.lease_id()));
                let m = m.with_strategy(LockStrategy::Optimistic);
                prop_assert_eq!(m.name(), name.as_str());
            }
            (Err(Error::InvalidName { .. }), Err(_)) => {}
            (r, p) => prop_assert!(false, "Mutex::new({name:?}) = {r:?}, prefix {p:?}"),
        }
        match (Election::new(s, &name), &prefix) {
            (Ok(e), Ok(p)) => prop_assert!(e.key().starts_with(p.as_str())),
            (Err(Error::InvalidName { .. }), Err(_)) => {}
            (r, p) => prop_assert!(false, "Election::new({name:?}) = {r:?}, prefix {p:?}"),
        }
        match (RwLock::new(s, &name), &prefix) {
            (Ok(_), Ok(_)) | (Err(Error::InvalidName { .. }), Err(_)) => {}
            (r, p) => prop_assert!(false, "RwLock::new({name:?}) = {r:?}, prefix {p:?}"),
        }
        match (Semaphore::new(s, &name, permits), &prefix) {
            (Ok(sem), Ok(_)) => {
                prop_assert!(permits > 0);
                prop_assert_eq!(sem.permits(), permits);
            }
            (Err(Error::InvalidArgument { .. }), Ok(_)) => prop_assert_eq!(permits, 0),
            (Err(Error::InvalidName { .. }), Err(_)) => {}
            (r, p) => prop_assert!(false, "Semaphore::new({name:?}, {permits}) = {r:?}, prefix {p:?}"),
        }
    }

    /// Keys of different valid names never nest: no prefix is a prefix of another name's
    /// prefix, no mutex/election key or semaphore count key of one name lies under another
    /// name's prefix.
    #[test]
    fn keys_of_different_names_never_nest(ns in namespace(), a in valid_name(), b in valid_name()) {
        prop_assume!(a != b);
        let client = session().client().with_namespace(ns.clone());
        let (pa, pb) = (client.prefix_of(&a).unwrap(), client.prefix_of(&b).unwrap());
        prop_assert!(!pb.starts_with(&pa), "{pa:?} contains {pb:?}");
        prop_assert!(!pa.starts_with(&pb), "{pb:?} contains {pa:?}");
        let s = session();
        for (name, other) in [(&a, &pb), (&b, &pa)] {
            let key = Mutex::new(s, name).unwrap().key().to_owned();
            let election = Election::new(s, name).unwrap().key().to_owned();
            let count_key = s.client().prefix_of(name).unwrap().trim_end_matches('/').to_owned();
            let other = other.strip_prefix(ns.as_str()).unwrap();
            for k in [&key, &election, &count_key] {
                prop_assert!(!k.starts_with(other), "{k:?} lies under {other:?}");
            }
        }
    }

    /// Anything that is not an etcd URL connects to the memory store or is refused with a
    /// typed error (etcd URLs are left out: they would dial the network).
    #[test]
    fn connect_urls_are_typed(url in any::<String>()) {
        prop_assume!(!url.starts_with("etcd://"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        match rt.block_on(Client::connect(&url)) {
            Ok(_) => prop_assert!(url == "memory://" || url == "memory"),
            Err(e) => prop_assert!(matches!(e, Error::InvalidArgument { .. }), "{url:?}: {e:?}"),
        }
    }
}
