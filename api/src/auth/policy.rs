//! The policy language and its evaluation.
//!
//! ```text
//! allow group <G> to <inspect|read|use|manage> repos in <tenancy | compartment <C>>
//!       [where target.repo.name = '<repo>']
//! ```
//! Keywords are case-insensitive; names may be quoted with `'…'`. Verbs are cumulative
//! (manage ⊃ use ⊃ read ⊃ inspect); a compartment statement covers the compartment's subtree and a
//! tenancy statement the whole tenancy. Members of `Administrators` may do everything in their
//! tenancy.

use keelson_raft::identity::{IdentityState, Scope, Statement, Verb, ADMINISTRATORS};

/// Where and why a statement did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    column: usize,
    quoted: bool,
}

fn tokenize(line_no: usize, line: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            let mut text = String::new();
            while i < chars.len() && chars[i] != c {
                text.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err(ParseError {
                    line: line_no,
                    column: start + 1,
                    expected: format!("closing {c}"),
                    found: "end of statement".into(),
                });
            }
            i += 1;
            tokens.push(Token {
                text,
                column: start + 1,
                quoted: true,
            });
        } else if c == '=' {
            tokens.push(Token {
                text: "=".into(),
                column: i + 1,
                quoted: false,
            });
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != '\'' && chars[i] != '"'
            {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                column: start + 1,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
    line: usize,
    end_column: usize,
}

impl Cursor<'_> {
    fn error(&self, expected: &str) -> ParseError {
        match self.tokens.get(self.at) {
            Some(t) => ParseError {
                line: self.line,
                column: t.column,
                expected: expected.into(),
                found: format!("'{}'", t.text),
            },
            None => ParseError {
                line: self.line,
                column: self.end_column,
                expected: expected.into(),
                found: "end of statement".into(),
            },
        }
    }

    fn keyword(&mut self, options: &[&str]) -> Result<String, ParseError> {
        match self.tokens.get(self.at) {
            Some(t) if !t.quoted && options.iter().any(|o| o.eq_ignore_ascii_case(&t.text)) => {
                self.at += 1;
                Ok(t.text.to_ascii_lowercase())
            }
            _ => Err(self.error(
                &options
                    .iter()
                    .map(|o| format!("'{o}'"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            )),
        }
    }

    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        match self.tokens.get(self.at) {
            Some(t) if t.quoted || (t.text != "=" && !t.text.is_empty()) => {
                self.at += 1;
                Ok(t.text.clone())
            }
            _ => Err(self.error(what)),
        }
    }
}

/// Parses one statement (`line` numbers errors).
pub fn parse_statement(line: usize, text: &str) -> Result<Statement, ParseError> {
    let tokens = tokenize(line, text)?;
    let mut c = Cursor {
        tokens: &tokens,
        at: 0,
        line,
        end_column: text.chars().count() + 1,
    };
    c.keyword(&["allow"])?;
    c.keyword(&["group"])?;
    let group = c.name("a group name")?;
    c.keyword(&["to"])?;
    let verb = match c.keyword(&["inspect", "read", "use", "manage"])?.as_str() {
        "inspect" => Verb::Inspect,
        "read" => Verb::Read,
        "use" => Verb::Use,
        _ => Verb::Manage,
    };
    c.keyword(&["repos", "repositories"])?;
    c.keyword(&["in"])?;
    let scope = match c.keyword(&["tenancy", "compartment"])?.as_str() {
        "tenancy" => Scope::Tenancy,
        _ => Scope::Compartment(c.name("a compartment name")?),
    };
    let mut repo_name = None;
    if c.at < tokens.len() {
        c.keyword(&["where"])?;
        c.keyword(&["target.repo.name"])?;
        c.keyword(&["="])?;
        repo_name = Some(c.name("a quoted repository name")?);
        if c.at < tokens.len() {
            return Err(c.error("end of statement"));
        }
    }
    Ok(Statement {
        group,
        verb,
        scope,
        repo_name,
        text: text.trim().to_string(),
    })
}

/// Parses a policy: one statement per entry (entries may themselves hold several lines).
pub fn parse_policy(statements: &[String]) -> Result<Vec<Statement>, ParseError> {
    let mut out = Vec::new();
    let mut line = 0;
    for entry in statements {
        for text in entry.lines() {
            line += 1;
            if text.trim().is_empty() {
                continue;
            }
            out.push(parse_statement(line, text)?);
        }
    }
    Ok(out)
}

/// Whether `user` of tenancy `ns` holds `verb` on the repository at `repo_path` (the name under
/// the namespace) in `compartment` (`None` = root).
pub fn allows(
    state: &IdentityState,
    ns: &str,
    user: &str,
    verb: Verb,
    compartment: Option<&str>,
    repo_path: &str,
) -> bool {
    let Some(tenancy) = state.tenancies.get(ns) else {
        return false;
    };
    if !tenancy.users.contains_key(user) {
        return false;
    }
    if tenancy.groups.get(ADMINISTRATORS).is_some_and(|m| m.contains(user)) {
        return true;
    }
    let chain = state.ancestry(ns, compartment);
    // A policy attached to a compartment applies only within that compartment's subtree.
    let applies = |p: &&keelson_raft::identity::Policy| {
        p.compartment
            .as_deref()
            .is_none_or(|attached| attached == ns || chain.iter().any(|c| c == attached))
    };
    tenancy
        .policies
        .values()
        .filter(applies)
        .flat_map(|p| p.statements.iter())
        .any(|st| {
            st.verb >= verb
                && tenancy.groups.get(&st.group).is_some_and(|m| m.contains(user))
                && match &st.scope {
                    Scope::Tenancy => true,
                    Scope::Compartment(c) => c == ns || chain.contains(c),
                }
                && st.repo_name.as_deref().is_none_or(|r| r == repo_path)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statements() {
        let s = parse_statement(
            1,
            "Allow group Devs to USE repos in compartment 'dev team' where target.repo.name = 'web/app'",
        )
        .unwrap();
        assert_eq!(s.group, "Devs");
        assert_eq!(s.verb, Verb::Use);
        assert_eq!(s.scope, Scope::Compartment("dev team".into()));
        assert_eq!(s.repo_name.as_deref(), Some("web/app"));
        let t = parse_statement(1, "allow group readers to read repositories in tenancy").unwrap();
        assert_eq!((t.verb, t.scope, t.repo_name), (Verb::Read, Scope::Tenancy, None));
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse_statement(3, "allow group g to write repos in tenancy").unwrap_err();
        assert_eq!((e.line, e.column), (3, 18));
        assert!(e.expected.contains("'inspect'") && e.found == "'write'", "{e}");
        let e = parse_statement(1, "allow group g to read repos in").unwrap_err();
        assert_eq!(e.found, "end of statement");
        assert_eq!(e.column, 31);
        let e = parse_statement(
            1,
            "allow group g to read repos in tenancy where target.repo.name = 'x' extra",
        )
        .unwrap_err();
        assert_eq!(e.expected, "end of statement");
        let e = parse_policy(&["allow group a to read repos in tenancy\nallow group b to read repo in tenancy".into()])
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 23));
        assert!(parse_statement(1, "allow group g to read repos in compartment 'open").is_err());
    }
}

#[cfg(test)]
mod attachment {
    use keelson_raft::identity::{IdentityCommand as C, IdentityRejection, IdentityState, Policy, Verb};

    use super::{allows, parse_policy};

    /// acme with compartments team ⊃ web and other; ann in group devs.
    fn tenancy() -> IdentityState {
        let mut s = IdentityState::default();
        let ns = || "acme".to_string();
        s.apply(C::CreateTenancy {
            namespace: ns(),
            now_ms: 1,
        })
        .unwrap();
        for (name, parent) in [("team", None), ("web", Some("team")), ("other", None)] {
            s.apply(C::CreateCompartment {
                namespace: ns(),
                name: name.into(),
                parent: parent.map(str::to_string),
            })
            .unwrap();
        }
        s.apply(C::CreateUser {
            namespace: ns(),
            user: "ann".into(),
            now_ms: 1,
        })
        .unwrap();
        s.apply(C::CreateGroup {
            namespace: ns(),
            group: "devs".into(),
        })
        .unwrap();
        s.apply(C::AddToGroup {
            namespace: ns(),
            group: "devs".into(),
            user: "ann".into(),
        })
        .unwrap();
        s
    }

    fn put(s: &mut IdentityState, compartment: &str, statement: &str) -> Result<(), IdentityRejection> {
        s.apply(C::PutPolicy {
            namespace: "acme".into(),
            name: format!("p{}", s.tenancies["acme"].policies.len()),
            policy: Policy {
                compartment: Some(compartment.into()),
                statements: parse_policy(&[statement.to_string()]).unwrap(),
            },
        })
    }

    #[test]
    fn a_compartment_policy_grants_only_within_its_subtree() {
        let mut s = tenancy();
        // Statements reaching outside the attachment are refused where they enter.
        for outside in [
            "allow group devs to manage repos in tenancy",
            "allow group devs to manage repos in compartment other",
            "allow group devs to manage repos in compartment acme",
        ] {
            let refused = put(&mut s, "team", outside).unwrap_err();
            assert!(
                matches!(refused, IdentityRejection::OutOfScope(_)),
                "{outside}: {refused:?}"
            );
        }
        put(&mut s, "team", "allow group devs to read repos in compartment web").unwrap();
        assert!(allows(&s, "acme", "ann", Verb::Read, Some("web"), "web/app"));
        assert!(!allows(&s, "acme", "ann", Verb::Read, Some("team"), "team/app"));
        assert!(!allows(&s, "acme", "ann", Verb::Read, Some("other"), "other/app"));

        // A policy stored before the check (attached to team, saying "in tenancy") is still
        // confined to team's subtree when evaluated.
        let legacy = Policy {
            compartment: Some("team".into()),
            statements: parse_policy(&["allow group devs to manage repos in tenancy".into()]).unwrap(),
        };
        s.tenancies
            .get_mut("acme")
            .unwrap()
            .policies
            .insert("legacy".into(), legacy);
        assert!(allows(&s, "acme", "ann", Verb::Manage, Some("team"), "team/app"));
        assert!(allows(&s, "acme", "ann", Verb::Manage, Some("web"), "web/app"));
        assert!(!allows(&s, "acme", "ann", Verb::Manage, Some("other"), "other/app"));
        assert!(!allows(&s, "acme", "ann", Verb::Manage, None, "root/app"));
    }
}
