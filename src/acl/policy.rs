//! Policies: named lists of prefix rules, and the compiled [`Grant`] a token's policies add up to.
//!
//! A policy is `{"rules": [{"prefix": "app/", "allow": ["read", "list", ...]}]}`. For a key, the rule with
//! the **longest** prefix the key starts with decides, and it grants exactly what it lists: a longer rule
//! can take capabilities away (`app/` may `write` but `app/locked/` only `read`). A key no rule matches
//! can do nothing. A token with several policies has the union of their rules (two rules with the same
//! prefix add up). `admin` is global, not per key: it may only appear in a rule of prefix `""`.
//!
//! A [`Grant`] keeps its rules sorted longest prefix first, so a check is one walk over a handful of rules
//! with a `starts_with` each: no allocation, no lock.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest policy name.
pub const MAX_POLICY_NAME_CHARS: usize = 128;
/// Most rules one policy may hold.
pub const MAX_RULES: usize = 1000;
/// The built-in policy of management tokens (the root token): every capability on every key.
pub const ADMIN_POLICY: &str = "admin";

/// What a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// GET/HEAD a value, watch.
    Read,
    /// Folder listings, `recurse`, `tree`, export.
    List,
    /// PUT/POST a value, import, batch writes.
    Write,
    /// DELETE a key or a folder.
    Delete,
    /// Open a sealed secret (`?secret=true`).
    Secret,
    /// The ACL endpoints, `system/config`, `perf/logs`, the audit trail, the cluster view (global).
    Admin,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 6] = [
        Capability::Read,
        Capability::List,
        Capability::Write,
        Capability::Delete,
        Capability::Secret,
        Capability::Admin,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Its name in policies and errors.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::List => "list",
            Capability::Write => "write",
            Capability::Delete => "delete",
            Capability::Secret => "secret",
            Capability::Admin => "admin",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule of a policy, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Keys starting with this (byte-wise; `""` is every key).
    pub prefix: String,
    /// What it allows.
    pub allow: Vec<Capability>,
}

/// A policy, as written and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Its rules.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parse and check a policy body.
    pub fn parse(body: &[u8]) -> Result<Policy> {
        let policy: Policy =
            serde_json::from_slice(body).map_err(|e| Error::invalid(format!("malformed policy JSON: {e}")))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Refuse what could not mean what its author thinks.
    pub fn validate(&self) -> Result<()> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::invalid(format!("a policy holds at most {MAX_RULES} rules")));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.prefix.len() > crate::key::MAX_KEY_BYTES {
                return Err(Error::invalid(format!(
                    "rule {i}: the prefix is longer than a key can be"
                )));
            }
            if rule.prefix.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "rule {i}: the prefix holds a control character"
                )));
            }
            if crate::key::is_reserved(rule.prefix.trim_end_matches('/')) && !rule.prefix.is_empty() {
                return Err(Error::invalid(format!(
                    "rule {i}: keys under {} are Cave's own; no policy reaches them",
                    crate::key::SYSTEM_PREFIX
                )));
            }
            if rule.allow.contains(&Capability::Admin) && !rule.prefix.is_empty() {
                return Err(Error::invalid(format!(
                    "rule {i}: admin is global: grant it in a rule with prefix \"\""
                )));
            }
        }
        Ok(())
    }
}

/// Check a policy name: 1 to [`MAX_POLICY_NAME_CHARS`] of `A-Z a-z 0-9 - _ .`, not the built-in one.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_POLICY_NAME_CHARS {
        return Err(Error::invalid(format!(
            "a policy name has 1 to {MAX_POLICY_NAME_CHARS} characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || name == "." || name == ".." {
        return Err(Error::invalid(
            "a policy name holds only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Caps(u8);

impl Caps {
    fn all() -> Caps {
        Caps(Capability::ALL.iter().fold(0, |bits, c| bits | c.bit()))
    }

    fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
}

/// What a token may do: its policies' rules merged, longest prefix first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    rules: Vec<(String, Caps)>,
    admin: bool,
}

impl Grant {
    /// Everything (the root token, the `admin` policy).
    pub fn everything() -> Grant {
        Grant {
            rules: vec![(String::new(), Caps::all())],
            admin: true,
        }
    }

    /// The union of `policies`.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Grant {
        let mut merged: BTreeMap<String, Caps> = BTreeMap::new();
        for policy in policies {
            for rule in &policy.rules {
                let caps = merged.entry(rule.prefix.clone()).or_default();
                for cap in &rule.allow {
                    caps.0 |= cap.bit();
                }
            }
        }
        let admin = merged.get("").is_some_and(|caps| caps.has(Capability::Admin));
        let mut rules: Vec<(String, Caps)> = merged.into_iter().collect();
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.0.len()));
        Grant { rules, admin }
    }

    /// Whether the token holds the global `admin` capability.
    pub fn admin(&self) -> bool {
        self.admin
    }

    /// Whether `cap` is allowed on `key`: the longest rule whose prefix `key` starts with decides.
    pub fn allows(&self, cap: Capability, key: &str) -> bool {
        self.rules
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .is_some_and(|(_, caps)| caps.has(cap))
    }

    /// Whether `cap` is allowed on some key starting with `prefix` (a listing or watch of it can show
    /// something).
    pub fn allows_some_below(&self, cap: Capability, prefix: &str) -> bool {
        self.allows(cap, prefix)
            || self
                .rules
                .iter()
                .any(|(rule, caps)| rule.starts_with(prefix) && caps.has(cap))
    }

    /// Whether `cap` is allowed on every key starting with `prefix` (a recursive delete of it).
    pub fn allows_all_below(&self, cap: Capability, prefix: &str) -> bool {
        // A key below `prefix` is decided by a rule that is a prefix of `prefix` (the one deciding `prefix`
        // itself) or by a longer rule that starts with `prefix`: all of those must allow it.
        self.allows(cap, prefix)
            && self
                .rules
                .iter()
                .filter(|(rule, _)| rule.len() > prefix.len() && rule.starts_with(prefix))
                .all(|(_, caps)| caps.has(cap))
    }

    /// The merged rules as written (for `whoami`, which the UI greys its actions out by).
    pub fn rules(&self) -> Vec<Rule> {
        self.rules
            .iter()
            .map(|(prefix, caps)| Rule {
                prefix: prefix.clone(),
                allow: Capability::ALL.into_iter().filter(|c| caps.has(*c)).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(json: &str) -> Policy {
        Policy::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_longest_prefix_decides_and_no_rule_means_nothing() {
        let p = policy(
            r#"{"rules":[{"prefix":"app/","allow":["read","write","list"]},
                         {"prefix":"app/locked/","allow":["read"]}]}"#,
        );
        let g = Grant::of([&p]);
        assert!(g.allows(Capability::Write, "app/x"));
        assert!(!g.allows(Capability::Write, "app/locked/x"));
        assert!(g.allows(Capability::Read, "app/locked/x"));
        assert!(!g.allows(Capability::Read, "other"));
        assert!(!g.allows(Capability::Secret, "app/x"));
        assert!(!g.admin());
        assert!(g.allows_some_below(Capability::List, ""));
        assert!(!g.allows_some_below(Capability::List, "other/"));
        assert!(g.allows_all_below(Capability::Write, "app/other/"));
        assert!(!g.allows_all_below(Capability::Write, "app/"));
    }

    #[test]
    fn policies_add_up_and_admin_is_global() {
        let a = policy(r#"{"rules":[{"prefix":"a/","allow":["read"]}]}"#);
        let b = policy(r#"{"rules":[{"prefix":"a/","allow":["write"]},{"prefix":"","allow":["admin"]}]}"#);
        let g = Grant::of([&a, &b]);
        assert!(g.allows(Capability::Read, "a/k") && g.allows(Capability::Write, "a/k"));
        assert!(g.admin());
        assert!(Policy::parse(br#"{"rules":[{"prefix":"a/","allow":["admin"]}]}"#).is_err());
        assert!(Policy::parse(br#"{"rules":[{"prefix":"_system/","allow":["read"]}]}"#).is_err());
        assert!(Policy::parse(br#"{"rules":[{"prefix":"a/","allow":["fly"]}]}"#).is_err());
        assert!(Policy::parse(br#"{"rules":[],"extra":1}"#).is_err());
        assert!(Grant::everything().allows(Capability::Secret, "anything"));
        validate_name("app-readers_1.0").unwrap();
        for bad in ["", "a/b", "..", "a b", &"x".repeat(200)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    fn caps() -> impl Strategy<Value = Vec<Capability>> {
        proptest::sample::subsequence(Capability::ALL[..5].to_vec(), 0..=5)
    }

    proptest! {
        /// The compiled check agrees with the rule as stated: among the rules whose prefix the key starts
        /// with, the longest decides.
        #[test]
        fn grant_agrees_with_the_stated_rule(
            rules in proptest::collection::vec(("[ab/]{0,4}", caps()), 0..6),
            key in "[ab/]{1,6}",
        ) {
            let p = Policy { rules: rules.iter().map(|(prefix, allow)| Rule { prefix: prefix.clone(), allow: allow.clone() }).collect() };
            let g = Grant::of([&p]);
            for cap in &Capability::ALL[..5] {
                let longest = rules.iter().filter(|(prefix, _)| key.starts_with(prefix.as_str())).map(|(p, _)| p.len()).max();
                let expected = longest.is_some_and(|len| rules.iter().any(|(prefix, allow)| prefix.len() == len && key.starts_with(prefix.as_str()) && allow.contains(cap)));
                prop_assert_eq!(g.allows(*cap, &key), expected);
                // Every key below a prefix that `allows_all_below` passes is allowed.
                if g.allows_all_below(*cap, "a") {
                    for suffix in ["", "a", "b/", "/a"] {
                        let below = format!("a{suffix}");
                        prop_assert!(g.allows(*cap, &below));
                    }
                }
            }
        }
    }
}
