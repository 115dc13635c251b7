//! Routing rules as operators write them: TOML `[[rules]]` tables (under
//! `[routing]` in `hub.toml` at start, or whole through `Admin.SetRules`
//! while the hub runs), validated into a `RuleSet` whose errors name the key
//! (`rules[2].send[0]`). Each rule says when it applies (hosting country,
//! linked countries, classification, known/new, cross-border) and whom it
//! sends to, for what, and why in words. Matching is `routing`'s; this
//! module only parses and says what a rule means.

use meldnet_core::CountryCode;
use meldnet_core::{SpiffeId, TrustDomain};
use meldnet_proto::v1::Purpose;
use serde::{Deserialize, Serialize};

/// The rules used when `hub.toml` names none: notice-and-takedown by the
/// hosting country's hotline, assessment under its own law for national
/// classifications, police of the hosting and linked countries, new
/// material to police and Europol first, cross-border cases to Europol.
pub const DEFAULT_RULES: &str = r#"[[rules]]
name = "takedown"
hosting = "linked"
classification = "baseline"
send = ["hosting_node"]
purpose = "notice_and_takedown"
why = "illegal everywhere (baseline): notice-and-takedown by the hotline of the hosting country"

[[rules]]
name = "national-assessment"
hosting = "linked"
classification = "national"
send = ["hosting_node"]
purpose = "assessment"
why = "illegal only under the law of the assessing country (national): the hotline of the hosting country assesses it under its own law and sends a notice only if it is illegal there too; its police are not told"

[[rules]]
name = "unassessed-assessment"
hosting = "linked"
classification = "unassessed"
send = ["hosting_node"]
purpose = "assessment"
why = "not yet assessed: the hotline of the hosting country assesses it"

[[rules]]
name = "hosting-police"
hosting = "linked"
classification = "baseline"
material = "known"
send = ["hosting_police"]
purpose = "investigation"
why = "known material hosted in a linked country: investigation by its police"

[[rules]]
name = "new-material-first"
classification = "baseline"
material = "new"
send = ["hosting_police", "europol"]
purpose = "investigation"
first = true
why = "new material may show a child not yet safeguarded: the police of the hosting country and Europol act first"

[[rules]]
name = "linked-police"
classification = "baseline"
send = ["linked_police"]
purpose = "investigation"
why = "a suspect, victim or provider establishment in a linked country: investigation by its police"

[[rules]]
name = "cross-border"
classification = "baseline"
cross_border = true
send = ["europol"]
purpose = "investigation"
why = "more than one linked country: a cross-border case for Europol"
"#;

/// Most rules in a set.
pub const MAX_RULES: usize = 256;
/// Longest rule set text, in bytes.
pub const MAX_RULES_TEXT: usize = 64 * 1024;

/// A rules file (or `SetRules` text): `[[rules]]` tables only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The rules, in the order they are applied.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A short name, recorded in each decision it shapes.
    pub name: String,
    /// `"linked"` (hosted in a member state or participating country),
    /// `"not_linked"`, `"any"` (the default), or a list of countries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosting: Option<HostingSpec>,
    /// Applies only if one of the report's linked countries is in this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked: Option<Vec<CountryCode>>,
    /// `baseline`, `national`, `unassessed`, `not_illegal`, `illegal`
    /// (baseline or national) or `any` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// `known`, `new` or `any` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material: Option<String>,
    /// Applies only to cross-border reports (true) or only to others (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_border: Option<bool>,
    /// `hosting_node`, `hosting_police`, `linked_police`, `origin_police`,
    /// `europol`, or a SPIFFE id.
    pub send: Vec<String>,
    /// `notice_and_takedown`, `investigation` or `assessment`.
    pub purpose: String,
    /// Recipients act on it before routine work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
    /// The rule in words, for decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The hosting condition as written: a keyword or a list of countries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostingSpec {
    /// `linked`, `not_linked` or `any`.
    Keyword(String),
    /// Hosted in one of these.
    Countries(Vec<CountryCode>),
}

/// When a rule applies, by hosting country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostingCond {
    /// Any report.
    Any,
    /// Hosted in a country that takes part.
    Linked,
    /// No hosting country that takes part.
    NotLinked,
    /// Hosted in one of these.
    In(Vec<CountryCode>),
}

/// The report's classification as a whole: the gravest of its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportClass {
    /// Some item is illegal everywhere.
    Baseline,
    /// Some item is illegal in the assessing country only (and none baseline).
    National,
    /// Some item is not yet assessed (and none illegal).
    Unassessed,
    /// Every item was assessed as not illegal.
    NotIllegal,
}

/// When a rule applies, by classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassCond {
    /// Any.
    Any,
    /// Baseline or national.
    Illegal,
    /// Exactly this.
    Is(ReportClass),
}

/// When a rule applies, by the hub's list check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialCond {
    /// Any.
    Any,
    /// Every item is on the list.
    Known,
    /// Some item is not.
    New,
}

/// Whom a rule sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The node of the hosting country (unless it is the origin).
    HostingNode,
    /// The police agencies of the hosting country.
    HostingPolice,
    /// The police agencies of the other linked countries (suspect, victim, provider).
    LinkedPolice,
    /// The police agencies of the origin's country.
    OriginPolice,
    /// The EU-level agencies (Europol).
    Europol,
    /// One named party.
    Party(SpiffeId),
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Hosting condition.
    pub hosting: HostingCond,
    /// Linked-countries condition.
    pub linked: Option<Vec<CountryCode>>,
    /// Classification condition.
    pub class: ClassCond,
    /// Known/new condition.
    pub material: MaterialCond,
    /// Cross-border condition.
    pub cross_border: Option<bool>,
    /// Whom.
    pub send: Vec<Target>,
    /// For what.
    pub purpose: Purpose,
    /// Before routine work.
    pub first: bool,
    /// In words.
    pub why: String,
}

/// A validated set of rules with its version and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// 1 for the rules the hub started with first; each change adds one.
    pub version: u64,
    /// In the order they apply.
    pub rules: Vec<Rule>,
    /// The text, as given (what `GetRules` shows).
    pub text: String,
}

/// A rule set that does not validate; `key` names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RulesError {
    /// E.g. `rules[2].send[0]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: String, message: impl Into<String>) -> RulesError {
    RulesError {
        key,
        message: message.into(),
    }
}

impl RuleSet {
    /// Parses and validates rules text (`[[rules]]` tables).
    pub fn parse(
        text: &str,
        federation: &TrustDomain,
        version: u64,
    ) -> Result<RuleSet, RulesError> {
        if text.len() > MAX_RULES_TEXT {
            return Err(err(
                "rules".into(),
                format!("at most {MAX_RULES_TEXT} bytes"),
            ));
        }
        let file: RulesFile =
            toml::from_str(text).map_err(|e| err("rules".into(), e.to_string()))?;
        Self::from_specs(&file.rules, text.to_string(), federation, version)
    }

    /// Validates rules as read from `hub.toml`; the text is made from them.
    pub fn from_specs(
        specs: &[RuleSpec],
        text: String,
        federation: &TrustDomain,
        version: u64,
    ) -> Result<RuleSet, RulesError> {
        if specs.is_empty() {
            return Err(err(
                "rules".into(),
                "at least one rule: without any, nothing would be routed",
            ));
        }
        if specs.len() > MAX_RULES {
            return Err(err("rules".into(), format!("at most {MAX_RULES} rules")));
        }
        let mut rules = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let rule = Rule::from_spec(s, federation, &format!("rules[{i}]"))?;
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(err(
                    format!("rules[{i}].name"),
                    format!("{} is used by an earlier rule", rule.name),
                ));
            }
            rules.push(rule);
        }
        Ok(RuleSet {
            version,
            rules,
            text,
        })
    }

    /// The embedded default rules.
    pub fn default_rules(federation: &TrustDomain) -> RuleSet {
        match RuleSet::parse(DEFAULT_RULES, federation, 1) {
            Ok(r) => r,
            // The embedded text is checked by a unit test.
            Err(e) => unreachable!("embedded default rules: {e}"),
        }
    }
}

impl Rule {
    fn from_spec(s: &RuleSpec, federation: &TrustDomain, at: &str) -> Result<Rule, RulesError> {
        let name = s.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(err(
                format!("{at}.name"),
                "1 to 64 of a-z, 0-9, '-' and '_'",
            ));
        }
        let hosting = match &s.hosting {
            None => HostingCond::Any,
            Some(HostingSpec::Keyword(k)) => match k.as_str() {
                "any" => HostingCond::Any,
                "linked" => HostingCond::Linked,
                "not_linked" => HostingCond::NotLinked,
                other => {
                    return Err(err(
                        format!("{at}.hosting"),
                        format!("{other:?}: expected \"linked\", \"not_linked\", \"any\" or a list of countries"),
                    ))
                }
            },
            Some(HostingSpec::Countries(c)) if c.is_empty() => {
                return Err(err(format!("{at}.hosting"), "an empty list matches nothing"))
            }
            Some(HostingSpec::Countries(c)) => HostingCond::In(c.clone()),
        };
        if matches!(&s.linked, Some(l) if l.is_empty()) {
            return Err(err(format!("{at}.linked"), "an empty list matches nothing"));
        }
        let class = match s.classification.as_deref().unwrap_or("any") {
            "any" => ClassCond::Any,
            "illegal" => ClassCond::Illegal,
            "baseline" => ClassCond::Is(ReportClass::Baseline),
            "national" => ClassCond::Is(ReportClass::National),
            "unassessed" => ClassCond::Is(ReportClass::Unassessed),
            "not_illegal" => ClassCond::Is(ReportClass::NotIllegal),
            other => {
                return Err(err(
                    format!("{at}.classification"),
                    format!("{other:?}: expected baseline, national, unassessed, not_illegal, illegal or any"),
                ))
            }
        };
        let material = match s.material.as_deref().unwrap_or("any") {
            "any" => MaterialCond::Any,
            "known" => MaterialCond::Known,
            "new" => MaterialCond::New,
            other => {
                return Err(err(
                    format!("{at}.material"),
                    format!("{other:?}: expected known, new or any"),
                ))
            }
        };
        if s.send.is_empty() {
            return Err(err(format!("{at}.send"), "name at least one recipient"));
        }
        let mut send = Vec::new();
        for (j, t) in s.send.iter().enumerate() {
            let key = format!("{at}.send[{j}]");
            send.push(match t.as_str() {
                "hosting_node" => Target::HostingNode,
                "hosting_police" => Target::HostingPolice,
                "linked_police" => Target::LinkedPolice,
                "origin_police" => Target::OriginPolice,
                "europol" => Target::Europol,
                other if other.starts_with("spiffe://") => {
                    let id = SpiffeId::parse(other).map_err(|e| err(key.clone(), e.to_string()))?;
                    if id.trust_domain() != federation {
                        return Err(err(key, format!("{id} is not of federation {federation}")));
                    }
                    if !id.role().receives_reports() {
                        return Err(err(key, format!("{id}: only nodes, agencies and regulators receive reports")));
                    }
                    Target::Party(id)
                }
                other => {
                    return Err(err(
                        key,
                        format!("{other:?}: expected hosting_node, hosting_police, linked_police, origin_police, europol or a SPIFFE id"),
                    ))
                }
            });
        }
        let purpose = match s.purpose.as_str() {
            "notice_and_takedown" => Purpose::NoticeAndTakedown,
            "investigation" => Purpose::Investigation,
            "assessment" => Purpose::Assessment,
            other => {
                return Err(err(
                    format!("{at}.purpose"),
                    format!("{other:?}: expected notice_and_takedown, investigation or assessment"),
                ))
            }
        };
        let why = match &s.why {
            Some(w) if w.trim().is_empty() || w.len() > 512 => {
                return Err(err(format!("{at}.why"), "1 to 512 bytes"))
            }
            Some(w) => w.clone(),
            None => format!("rule {name}"),
        };
        Ok(Rule {
            name: name.to_string(),
            hosting,
            linked: s.linked.clone(),
            class,
            material,
            cross_border: s.cross_border,
            send,
            purpose,
            first: s.first,
            why,
        })
    }
}

/// The word for a purpose, as rules and CLIs write it.
pub fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::NoticeAndTakedown => "notice_and_takedown",
        Purpose::Investigation => "investigation",
        Purpose::Assessment => "assessment",
        Purpose::SightingUpdate => "sighting_update",
        Purpose::Escalation => "escalation",
        Purpose::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed() -> TrustDomain {
        TrustDomain::parse("eu.meldnet.test").unwrap()
    }

    #[test]
    fn the_default_rules_validate() {
        let r = RuleSet::default_rules(&fed());
        assert_eq!(r.version, 1);
        assert_eq!(r.rules.len(), 7);
        assert_eq!(r.rules[0].purpose, Purpose::NoticeAndTakedown);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |text: &str| RuleSet::parse(text, &fed(), 2).unwrap_err().key;
        let rule = |extra: &str| {
            format!("[[rules]]\nname = \"a\"\nsend = [\"europol\"]\npurpose = \"investigation\"\n{extra}\n")
        };
        assert_eq!(bad(&rule("hosting = \"somewhere\"")), "rules[0].hosting");
        assert_eq!(
            bad(&rule("classification = \"bad\"")),
            "rules[0].classification"
        );
        assert_eq!(bad(&rule("material = \"old\"")), "rules[0].material");
        let two = format!("{}{}", rule(""), rule(""));
        assert_eq!(bad(&two), "rules[1].name");
        let other = rule("")
            .replace("\"a\"", "\"b\"")
            .replace("europol", "spiffe://other.test/agency/DE/x");
        assert_eq!(bad(&format!("{}{other}", rule(""))), "rules[1].send[0]");
        assert_eq!(
            bad(&rule("").replace("investigation", "lunch")),
            "rules[0].purpose"
        );
        assert_eq!(bad(""), "rules");
        assert_eq!(bad("[[rules]]\nname = \"x\"\n"), "rules");
        assert_eq!(bad(&rule("hosting = []")), "rules[0].hosting");
    }

    #[test]
    fn a_rule_with_countries_and_a_party_parses() {
        let text = "[[rules]]\nname = \"de-regulator\"\nhosting = [\"DE\"]\nsend = [\"spiffe://eu.meldnet.test/regulator/DE/bnetza\"]\npurpose = \"investigation\"\n";
        let r = RuleSet::parse(text, &fed(), 3).unwrap();
        assert_eq!(
            r.rules[0].hosting,
            HostingCond::In(vec![CountryCode::parse("DE").unwrap()])
        );
        assert!(matches!(r.rules[0].send[0], Target::Party(_)));
        assert_eq!(r.text, text);
    }
}
