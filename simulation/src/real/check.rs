//! What the client checks once the nodes agree: each key's final entry against every write made to it.

use std::collections::BTreeMap;

/// What one write was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Put(String),
    Delete,
}

/// What the client heard back.
#[derive(Debug, Clone)]
pub(super) enum Answer {
    Acked((u64, u64)),
    /// 4xx: definitely not written.
    Refused,
    /// 507: the node's disk was full, nothing was stored.
    StorageFull,
    Unknown,
}

/// One write the client made, and its fate.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) key: String,
    pub(super) op: Op,
    pub(super) node: String,
    pub(super) answer: Answer,
}

/// One exported entry: `(version, deleted, value)`.
pub(super) type Exported = BTreeMap<String, ((u64, u64), bool, String)>;

/// `HLC-NODEHEX` as a comparable pair.
pub(super) fn parse_version(s: &str) -> Option<(u64, u64)> {
    let (hlc, node) = s.split_once('-')?;
    Some((hlc.parse().ok()?, u64::from_str_radix(node, 16).ok()?))
}

/// The convergence rules of the `real` module docs, on the agreed export.
pub(super) fn check(exported: &Exported, attempts: &[Attempt]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in attempts {
        by_key.entry(a.key.as_str()).or_default().push(a);
    }
    for key in exported.keys() {
        if !by_key.contains_key(key.as_str()) {
            return Err(format!("key {key} appeared without any write"));
        }
    }
    for (key, tried) in &by_key {
        let history = || {
            tried
                .iter()
                .map(|a| format!("  {:?} at {} -> {:?}", a.op, a.node, a.answer))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let greatest = tried
            .iter()
            .filter_map(|a| match a.answer {
                Answer::Acked(v) => Some(v),
                _ => None,
            })
            .max();
        let Some(&(version, deleted, ref value)) = exported.get(*key) else {
            if greatest.is_some() {
                return Err(format!("acknowledged writes to {key} vanished\n{}", history()));
            }
            continue;
        };
        let content = if deleted { Op::Delete } else { Op::Put(value.clone()) };
        let explained = match greatest {
            Some(g) if version < g => false,
            Some(g) if version == g => tried
                .iter()
                .any(|a| matches!(a.answer, Answer::Acked(v) if v == g) && a.op == content),
            // Newer than every acknowledged write: a write whose answer was lost.
            _ => tried
                .iter()
                .any(|a| matches!(a.answer, Answer::Unknown) && a.op == content),
        };
        if !explained {
            return Err(format!(
                "{key} ends as {content:?} at version {version:?}, which no write explains (greatest acknowledged: \
                 {greatest:?})\n{}",
                history()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(key: &str, op: Op, answer: Answer) -> Attempt {
        Attempt {
            key: key.into(),
            op,
            node: "node0".into(),
            answer,
        }
    }

    fn put(v: &str) -> Op {
        Op::Put(v.into())
    }

    fn state(entries: &[(&str, (u64, u64), bool, &str)]) -> Exported {
        entries
            .iter()
            .map(|(k, v, d, val)| (k.to_string(), (*v, *d, val.to_string())))
            .collect()
    }

    #[test]
    fn the_greatest_acknowledged_write_passes() {
        let attempts = [
            attempt("a", put("1"), Answer::Acked((10, 1))),
            attempt("a", put("2"), Answer::Acked((12, 2))),
            attempt("b", Op::Delete, Answer::Acked((11, 1))),
        ];
        assert_eq!(
            check(
                &state(&[("a", (12, 2), false, "2"), ("b", (11, 1), true, "")]),
                &attempts
            ),
            Ok(())
        );
    }

    #[test]
    fn a_lost_answer_may_win() {
        let attempts = [
            attempt("a", put("1"), Answer::Acked((10, 1))),
            attempt("a", put("late"), Answer::Unknown),
        ];
        assert_eq!(check(&state(&[("a", (15, 3), false, "late")]), &attempts), Ok(()));
    }

    #[test]
    fn an_older_version_than_an_acknowledged_write_fails() {
        let attempts = [
            attempt("a", put("1"), Answer::Acked((10, 1))),
            attempt("a", put("2"), Answer::Acked((12, 2))),
        ];
        let err = check(&state(&[("a", (10, 1), false, "1")]), &attempts).unwrap_err();
        assert!(err.contains("no write explains"), "{err}");
    }

    #[test]
    fn a_vanished_acknowledged_write_fails() {
        let attempts = [attempt("a", put("1"), Answer::Acked((10, 1)))];
        let err = check(&state(&[]), &attempts).unwrap_err();
        assert!(err.contains("vanished"), "{err}");
    }

    #[test]
    fn wrong_content_at_the_acknowledged_version_fails() {
        let attempts = [attempt("a", put("1"), Answer::Acked((10, 1)))];
        assert!(check(&state(&[("a", (10, 1), false, "other")]), &attempts).is_err());
        assert!(check(&state(&[("a", (10, 1), true, "")]), &attempts).is_err());
    }

    #[test]
    fn a_refused_write_explains_nothing() {
        let attempts = [
            attempt("a", put("1"), Answer::Acked((10, 1))),
            attempt("a", Op::Delete, Answer::Refused),
            attempt("a", put("y"), Answer::StorageFull),
        ];
        assert!(check(&state(&[("a", (20, 1), true, "")]), &attempts).is_err());
        assert!(check(&state(&[("a", (20, 1), false, "y")]), &attempts).is_err());
    }

    #[test]
    fn a_key_nobody_wrote_fails() {
        let err = check(&state(&[("ghost", (1, 1), false, "x")]), &[]).unwrap_err();
        assert!(err.contains("without any write"), "{err}");
    }

    #[test]
    fn versions_parse_as_exported() {
        assert_eq!(
            parse_version("117657248016957440-f09fac6fbfeab405"),
            Some((117657248016957440, 0xf09fac6fbfeab405))
        );
        assert_eq!(parse_version("0"), None);
    }
}
