//! Name validation: a recipe name becomes one key prefix `<namespace><name>/`.
//!
//! A name is 1 to 200 bytes of `A–Z a–z 0–9 . _ - : @ + =`, and neither `.` nor `..`.
//! `/` is refused on purpose: with it, the queue of lock `a` (prefix `a/`) would contain the
//! keys of lock `a/b` and the two would block each other. Put hierarchy in the client's
//! namespace instead.

use crate::error::{Error, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

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
}
