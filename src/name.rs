//! Name validation: a recipe name becomes one key prefix `<namespace><name>/`.
//!
//! A name is 1 to 200 bytes of `A–Z a–z 0–9 . _ - : @ + =`, and neither `.` nor `..`.
//! `/` is refused on purpose: with it, the queue of lock `a` (prefix `a/`) would contain the
//! keys of lock `a/b` and the two would block each other. Put hierarchy in the client's
//! namespace instead.
//!
//! Recipes write only `<namespace><name>` (a semaphore's count) and keys under
//! `<namespace><name>/`. Keys leasehold keeps for itself live under
//! `<namespace>`[`RESERVED`]: its first segment, `~leasehold`, is not a valid name (`~` is
//! refused), so no recipe's key is under it and no reserved key is under a recipe's prefix.

use crate::error::{Error, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The first segment of the keys leasehold reserves for itself under a namespace (for
/// example lock-delay markers): `<namespace>~leasehold/<area>/<name>`. Not a valid name.
pub(crate) const RESERVED: &str = "~leasehold/";

/// A reserved key: `<namespace>~leasehold/<area>/<name>`, for a valid `name`.
pub(crate) fn reserved_key(namespace: &str, area: &str, name: &str) -> String {
    debug_assert!(validate_name(name).is_ok() && !area.contains('/'));
    format!("{namespace}{RESERVED}{area}/{name}")
}

/// Checks `name` and returns it unchanged, or a typed error saying what is wrong.
pub fn validate_name(name: &str) -> Result<&str> {
    let fail = |reason| Err(Error::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return fail("'.' and '..' are reserved");
    }
    if name.contains('/') {
        return fail("'/' is not allowed (names are one segment; use the client namespace for hierarchy)");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:@+=".contains(&b)) {
        return fail("only A-Z a-z 0-9 . _ - : @ + = are allowed");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["inventory", "job-1", "a.b_c:d@e+f=g", &"x".repeat(200)] {
            assert_eq!(validate_name(ok).unwrap(), ok);
        }
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        for bad in ["", ".", "..", "a/b", "/a", "a b", "ä", "a\0b", "a\n", &"x".repeat(201)] {
            match validate_name(bad) {
                Err(Error::InvalidName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_reserved_segment_is_not_a_name() {
        let segment = RESERVED.strip_suffix('/').unwrap();
        assert!(!segment.contains('/'));
        assert!(validate_name(segment).is_err());
    }

    proptest::proptest! {
        /// No recipe key of any valid name (its semaphore count key `<ns><name>`, or any
        /// key under `<ns><name>/`) is a reserved key, and no reserved key is under a
        /// recipe's prefix or equal to a count key.
        #[test]
        fn reserved_keys_never_meet_recipe_keys(
            ns in "[a-z/~]{0,6}",
            name in "[A-Za-z0-9._:@+=~-]{1,12}",
            other in "[A-Za-z0-9._:@+=-]{1,12}",
            suffix in "[a-f0-9/-]{0,8}",
        ) {
            proptest::prop_assume!(validate_name(&other).is_ok());
            let reserved = reserved_key(&ns, "lock-delay", &other);
            let reserved_area = format!("{ns}{RESERVED}");
            if validate_name(&name).is_ok() {
                let count_key = format!("{ns}{name}");
                let queue_prefix = format!("{count_key}/");
                let queue_key = format!("{queue_prefix}{suffix}");
                proptest::prop_assert_ne!(&count_key, &reserved);
                proptest::prop_assert!(!reserved.starts_with(&queue_prefix), "{} under {}", reserved, queue_prefix);
                proptest::prop_assert!(!queue_key.starts_with(&reserved_area), "{} reserved", queue_key);
                proptest::prop_assert!(!count_key.starts_with(&reserved_area), "{} reserved", count_key);
            }
        }
    }
}
