//! Routing: who must act on a report, and why, in words and in
//! machine-readable form that go into the signed decision.
//! - EU link: any of hosting, suspect, victim or provider-establishment
//!   country is a configured member state or participating country. Without
//!   one, nobody receives it and the decision lists every fact checked.
//! - With one, the operators' rules (`rules`) apply in order; each rule that
//!   matches adds its recipients (a recipient keeps the purpose of the first
//!   rule that named it) and is recorded with what it named and why.
//! - The origin node never receives its own report: where a rule would send
//!   it the notice, the decision says its hotline sends the notice itself.
//!
//! This module decides; it never stores and never signs.

use crate::rules::{ClassCond, HostingCond, MaterialCond, ReportClass, RuleSet, Target};
use meldnet_core::CountryCode;
use meldnet_core::{Classification, Report};
use meldnet_core::{Jurisdiction, Role, SpiffeId, TrustDomain};
use meldnet_proto::v1::Purpose;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// The parties the router can send to, and the rules it applies.
#[derive(Debug, Clone)]
pub struct Router {
    federation: TrustDomain,
    member_states: BTreeSet<CountryCode>,
    participating: BTreeSet<CountryCode>,
    nodes: BTreeSet<CountryCode>,
    agencies: Vec<SpiffeId>,
    rules: Arc<RuleSet>,
    memo: RouteMemo,
}

/// What a route depends on: the same facts give the same route under the
/// same rules and parties, so each is decided once (a million reports of
/// a burst share a handful).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteKey {
    origin: CountryCode,
    hosting: Option<CountryCode>,
    suspect: Option<CountryCode>,
    victim: Option<CountryCode>,
    provider: Option<CountryCode>,
    class: ReportClass,
    known: bool,
}

/// Routes decided under this router's rules and parties. A router made for
/// other rules or parties starts with none.
#[derive(Debug, Default)]
struct RouteMemo(Mutex<HashMap<RouteKey, Arc<Route>>>);

impl Clone for RouteMemo {
    fn clone(&self) -> Self {
        RouteMemo::default()
    }
}

/// Routes remembered at most (any more and the memo starts again).
const MEMO_MAX: usize = 4096;

/// One recipient of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTo {
    /// Who.
    pub identity: SpiffeId,
    /// Who, as the decision names it (made once with the route).
    pub identity_text: String,
    /// To do what.
    pub purpose: Purpose,
    /// Why, in words.
    pub reason: String,
    /// Before routine work.
    pub first: bool,
    /// The rule that chose it.
    pub rule: String,
}

/// A rule that matched and what it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The rule's name.
    pub rule: String,
    /// Everyone it named, also those an earlier rule had named.
    pub recipients: Vec<SpiffeId>,
    /// The same, as the decision names them.
    pub recipient_texts: Vec<String>,
    /// The rule in words.
    pub why: String,
}

/// Whether the hub's list knows every item of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Material {
    /// Every item is on the list.
    Known,
    /// Some item is not: it may show a child not yet safeguarded.
    New,
}

/// A routing decision before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Whether the report has an EU link.
    pub eu_link: bool,
    /// Each fact checked, in words.
    pub facts: Vec<String>,
    /// The hosting country, if it takes part.
    pub hosting: Option<CountryCode>,
    /// The report's classification as a whole.
    pub class: ReportClass,
    /// The recipients, without duplicates, in a stable order.
    pub recipients: Vec<RouteTo>,
    /// The decision in words.
    pub reasons: Vec<String>,
    /// The rules that matched, in order.
    pub matched: Vec<Matched>,
    /// The version of the rules applied.
    pub rules_version: u64,
}

/// The gravest classification among the items.
pub fn report_class(report: &Report) -> ReportClass {
    let has = |c: Classification| report.items.iter().any(|i| i.classification == c);
    if has(Classification::Baseline) {
        ReportClass::Baseline
    } else if has(Classification::National) {
        ReportClass::National
    } else if has(Classification::Unassessed) {
        ReportClass::Unassessed
    } else {
        ReportClass::NotIllegal
    }
}

/// The classification in words.
pub fn class_name(c: ReportClass) -> &'static str {
    match c {
        ReportClass::Baseline => "baseline",
        ReportClass::National => "national",
        ReportClass::Unassessed => "unassessed",
        ReportClass::NotIllegal => "not illegal",
    }
}

impl Router {
    /// A router over the registered nodes and agencies, applying `rules`.
    pub fn new(
        federation: TrustDomain,
        member_states: impl IntoIterator<Item = CountryCode>,
        participating: impl IntoIterator<Item = CountryCode>,
        nodes: impl IntoIterator<Item = CountryCode>,
        agencies: Vec<SpiffeId>,
        rules: Arc<RuleSet>,
    ) -> Self {
        Router {
            federation,
            member_states: member_states.into_iter().collect(),
            participating: participating.into_iter().collect(),
            nodes: nodes.into_iter().collect(),
            agencies,
            rules,
            memo: RouteMemo::default(),
        }
    }

    /// The same rules for other parties (the registry changed).
    pub fn with_parties(&self, nodes: Vec<CountryCode>, agencies: Vec<SpiffeId>) -> Router {
        Router {
            nodes: nodes.into_iter().collect(),
            agencies,
            ..self.clone()
        }
    }

    /// The same parties under other rules.
    pub fn with_rules(&self, rules: Arc<RuleSet>) -> Router {
        Router {
            rules,
            ..self.clone()
        }
    }

    /// The rules applied.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The federation routed in.
    pub fn federation(&self) -> &TrustDomain {
        &self.federation
    }

    /// Whether a country is a member state or participating country.
    pub fn takes_part(&self, c: &CountryCode) -> bool {
        self.member_states.contains(c) || self.participating.contains(c)
    }

    /// The registered node of `cc`, if any.
    pub fn node_of(&self, cc: CountryCode) -> Option<SpiffeId> {
        self.nodes
            .contains(&cc)
            .then(|| SpiffeId::node(&self.federation, cc))
    }

    /// The registered police agencies of `cc`.
    pub fn police_of(&self, cc: CountryCode) -> Vec<SpiffeId> {
        self.agencies
            .iter()
            .filter(|a| matches!(a.role(), Role::Agency { jurisdiction: Jurisdiction::Country(c), .. } if *c == cc))
            .cloned()
            .collect()
    }

    fn europol(&self) -> Vec<SpiffeId> {
        self.agencies
            .iter()
            .filter(|a| {
                matches!(
                    a.role(),
                    Role::Agency {
                        jurisdiction: Jurisdiction::Eu,
                        ..
                    }
                )
            })
            .cloned()
            .collect()
    }

    /// Decides the route of a validated report; `material` is the hub's
    /// own list check. Reports with the same facts share one route.
    pub fn decide(&self, report: &Report, material: Material) -> Arc<Route> {
        let link = &report.eu_link;
        let key = RouteKey {
            origin: report.origin,
            hosting: link.hosting,
            suspect: link.suspect,
            victim: link.victim,
            provider: link.provider,
            class: report_class(report),
            known: material == Material::Known,
        };
        let mut memo = self.memo.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = memo.get(&key) {
            return r.clone();
        }
        drop(memo);
        let route = Arc::new(self.decide_anew(report, material));
        memo = self.memo.0.lock().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= MEMO_MAX {
            memo.clear();
        }
        memo.insert(key, route.clone());
        route
    }

    fn decide_anew(&self, report: &Report, material: Material) -> Route {
        let link = &report.eu_link;
        let named = [
            ("hosting_country", link.hosting),
            ("suspect_country", link.suspect),
            ("victim_country", link.victim),
            ("provider_country", link.provider),
        ];
        let mut facts = Vec::new();
        let mut linked = Vec::new();
        for (name, cc) in named {
            match cc {
                None => facts.push(format!("{name}: not given")),
                Some(c) if self.member_states.contains(&c) => {
                    facts.push(format!("{name} {c}: member state"));
                    linked.push((name, c));
                }
                Some(c) if self.participating.contains(&c) => {
                    facts.push(format!(
                        "{name} {c}: participating country (EEA or partner)"
                    ));
                    linked.push((name, c));
                }
                Some(c) => facts.push(format!(
                    "{name} {c}: not a member state or participating country"
                )),
            }
        }
        let hosting = link.hosting.filter(|c| self.takes_part(c));
        let countries: BTreeSet<CountryCode> = linked.iter().map(|(_, c)| *c).collect();
        let cross_border = countries.len() >= 2;
        let class = report_class(report);
        let mut route = Route {
            eu_link: !linked.is_empty(),
            facts,
            hosting,
            class,
            recipients: Vec::new(),
            reasons: Vec::new(),
            matched: Vec::new(),
            rules_version: self.rules.version,
        };
        if linked.is_empty() {
            route.reasons.push(
                "no EU link: neither the hosting country nor the country of a suspect, a victim or the \
                 provider's main establishment is a member state or participating country; not routed inside the EU"
                    .into(),
            );
            return route;
        }
        route.facts.push(format!(
            "classification: {}; material: {}; {}",
            class_name(class),
            match material {
                Material::Known => "known",
                Material::New => "new",
            },
            if cross_border {
                let c: Vec<String> = countries.iter().map(|c| c.to_string()).collect();
                format!("cross-border ({})", c.join(", "))
            } else {
                "one linked country".into()
            }
        ));
        for rule in &self.rules.rules {
            let applies = match &rule.hosting {
                HostingCond::Any => true,
                HostingCond::Linked => hosting.is_some(),
                HostingCond::NotLinked => hosting.is_none(),
                HostingCond::In(list) => link.hosting.is_some_and(|h| list.contains(&h)),
            } && rule
                .linked
                .as_ref()
                .is_none_or(|l| countries.iter().any(|c| l.contains(c)))
                && match rule.class {
                    ClassCond::Any => true,
                    ClassCond::Illegal => {
                        matches!(class, ReportClass::Baseline | ReportClass::National)
                    }
                    ClassCond::Is(c) => c == class,
                }
                && match rule.material {
                    MaterialCond::Any => true,
                    MaterialCond::Known => material == Material::Known,
                    MaterialCond::New => material == Material::New,
                }
                && rule.cross_border.is_none_or(|b| b == cross_border);
            if !applies {
                continue;
            }
            let mut named = Vec::new();
            let notes_before = route.reasons.len();
            for target in &rule.send {
                match target {
                    Target::HostingNode => {
                        let Some(host) = hosting else { continue };
                        if host == report.origin {
                            route.reasons.push(format!(
                                "{}: hosted in {host}, the origin node's own country: its hotline acts itself",
                                rule.name
                            ));
                        } else if self.nodes.contains(&host) {
                            named.push(SpiffeId::node(&self.federation, host));
                        } else {
                            route.reasons.push(format!(
                                "{}: hosted in {host}, but no node of {host} is registered",
                                rule.name
                            ));
                        }
                    }
                    Target::HostingPolice => {
                        let Some(host) = hosting else { continue };
                        let police = self.police_of(host);
                        if police.is_empty() {
                            route.reasons.push(format!(
                                "{}: no police agency of {host} is registered",
                                rule.name
                            ));
                        }
                        named.extend(police);
                    }
                    Target::LinkedPolice => {
                        for (field, c) in linked.iter().filter(|(f, _)| *f != "hosting_country") {
                            let police = self.police_of(*c);
                            if police.is_empty() {
                                route.reasons.push(format!(
                                    "{}: {field} {c}: no police agency of {c} is registered",
                                    rule.name
                                ));
                            }
                            named.extend(police);
                        }
                    }
                    Target::OriginPolice => named.extend(self.police_of(report.origin)),
                    Target::Europol => {
                        let eu = self.europol();
                        if eu.is_empty() {
                            route
                                .reasons
                                .push(format!("{}: no EU-level agency is registered", rule.name));
                        }
                        named.extend(eu);
                    }
                    Target::Party(id) => named.push(id.clone()),
                }
            }
            // A rule whose conditions hold but that names nobody and has
            // nothing to say (linked police without another linked
            // country) did not shape the decision: not recorded.
            if named.is_empty() && route.reasons.len() == notes_before {
                continue;
            }
            for id in &named {
                match route.recipients.iter_mut().find(|r| &r.identity == id) {
                    Some(existing) => existing.first |= rule.first,
                    None => route.recipients.push(RouteTo {
                        identity: id.clone(),
                        identity_text: id.to_string(),
                        purpose: rule.purpose,
                        reason: rule.why.clone(),
                        first: rule.first,
                        rule: rule.name.clone(),
                    }),
                }
            }
            route
                .reasons
                .push(format!("rule {}: {}", rule.name, rule.why));
            named.dedup();
            route.matched.push(Matched {
                rule: rule.name.clone(),
                recipient_texts: named.iter().map(|r| r.to_string()).collect(),
                recipients: named,
                why: rule.why.clone(),
            });
        }
        if route.recipients.is_empty() {
            route.reasons.push(
                "EU link, but no rule named a registered recipient: stored, delivered to nobody"
                    .into(),
            );
        } else {
            let who: Vec<String> = route
                .recipients
                .iter()
                .map(|r| {
                    if r.first {
                        format!("{} (first)", r.identity)
                    } else {
                        r.identity.to_string()
                    }
                })
                .collect();
            route.reasons.push(format!("routed to {}", who.join(", ")));
        }
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_core::*;
    use meldnet_core::{Md5, Sha256};

    fn cc(s: &str) -> CountryCode {
        CountryCode::parse(s).unwrap()
    }

    fn router() -> Router {
        let fed = TrustDomain::parse("eu.meldnet.test").unwrap();
        let agencies = ["agency/DE/bka", "agency/NL/politie", "agency/EU/europol"]
            .iter()
            .map(|p| SpiffeId::parse(&format!("spiffe://eu.meldnet.test/{p}")).unwrap())
            .collect();
        Router::new(
            fed,
            meldnet_core::EU_MEMBER_STATES.iter().map(|c| cc(c)),
            [cc("NO")],
            [cc("NL"), cc("DE"), cc("FR"), cc("NO")],
            agencies,
            Arc::new(RuleSet::default_rules(
                &TrustDomain::parse("eu.meldnet.test").unwrap(),
            )),
        )
    }

    fn report(origin: &str, link: EuLinkFacts) -> Report {
        Report {
            id: ReportId::new_v7(),
            origin: cc(origin),
            created_at_ms: 1,
            url: ReportUrl::parse("https://h.test/x").unwrap(),
            eu_link: link,
            items: vec![Item {
                sha256: Sha256([0; 32]),
                md5: Md5([0; 16]),
                pdq: None,
                classification: Classification::Baseline,
                age_group: AgeGroup::Unknown,
                media_type: MediaType::Image,
                known: None,
            }],
        }
    }

    impl Router {
        fn decide_new(&self, r: &Report) -> Route {
            (*self.decide(r, Material::New)).clone()
        }
    }

    fn ids(r: &Route) -> Vec<String> {
        r.recipients
            .iter()
            .map(|r| r.identity.to_string())
            .collect()
    }

    #[test]
    fn hosted_in_member_state_goes_to_its_node_and_police() {
        let r = router().decide_new(&report(
            "NL",
            EuLinkFacts {
                hosting: Some(cc("DE")),
                ..Default::default()
            },
        ));
        assert!(r.eu_link);
        assert_eq!(
            ids(&r),
            [
                "spiffe://eu.meldnet.test/node/DE",
                "spiffe://eu.meldnet.test/agency/DE/bka",
                "spiffe://eu.meldnet.test/agency/EU/europol"
            ]
        );
        assert_eq!(r.recipients[0].purpose, Purpose::NoticeAndTakedown);
        assert!(r.recipients[1].first && !r.recipients[0].first);
        let names: Vec<&str> = r.matched.iter().map(|m| m.rule.as_str()).collect();
        assert_eq!(names, ["takedown", "new-material-first"]);
        // Known material: the police of the hosting country, not first, no Europol.
        let known = router().decide(
            &report(
                "NL",
                EuLinkFacts {
                    hosting: Some(cc("DE")),
                    ..Default::default()
                },
            ),
            Material::Known,
        );
        assert_eq!(
            ids(&known),
            [
                "spiffe://eu.meldnet.test/node/DE",
                "spiffe://eu.meldnet.test/agency/DE/bka"
            ]
        );
        assert!(!known.recipients[1].first);
    }

    #[test]
    fn no_eu_link_goes_nowhere_and_says_why() {
        let r = router().decide_new(&report(
            "NL",
            EuLinkFacts {
                hosting: Some(cc("US")),
                ..Default::default()
            },
        ));
        assert!(!r.eu_link);
        assert!(r.recipients.is_empty());
        assert!(r.reasons[0].starts_with("no EU link"));
        assert!(r.facts.contains(
            &"hosting_country US: not a member state or participating country".to_string()
        ));
    }

    #[test]
    fn suspect_link_goes_to_police_only() {
        let r = router().decide_new(&report(
            "FR",
            EuLinkFacts {
                hosting: Some(cc("US")),
                suspect: Some(cc("NL")),
                ..Default::default()
            },
        ));
        assert_eq!(
            ids(&r),
            [
                "spiffe://eu.meldnet.test/agency/EU/europol",
                "spiffe://eu.meldnet.test/agency/NL/politie"
            ]
        );
    }

    #[test]
    fn a_participating_country_links_like_a_member_state() {
        let r = router().decide_new(&report(
            "NL",
            EuLinkFacts {
                hosting: Some(cc("NO")),
                ..Default::default()
            },
        ));
        assert!(r.eu_link);
        assert!(r
            .facts
            .contains(&"hosting_country NO: participating country (EEA or partner)".to_string()));
        assert_eq!(
            ids(&r),
            [
                "spiffe://eu.meldnet.test/node/NO",
                "spiffe://eu.meldnet.test/agency/EU/europol"
            ]
        );
        assert!(
            r.reasons
                .iter()
                .any(|x| x == "new-material-first: no police agency of NO is registered"),
            "{:?}",
            r.reasons
        );
    }

    #[test]
    fn own_country_hosting_skips_own_node() {
        let r = router().decide_new(&report(
            "DE",
            EuLinkFacts {
                hosting: Some(cc("DE")),
                ..Default::default()
            },
        ));
        assert_eq!(
            ids(&r),
            [
                "spiffe://eu.meldnet.test/agency/DE/bka",
                "spiffe://eu.meldnet.test/agency/EU/europol"
            ]
        );
        assert!(
            r.reasons[0].contains("its hotline acts itself"),
            "{:?}",
            r.reasons
        );
    }
}
