//! Routing: who must act on a report, and why, in words that go into the
//! signed decision. First version of the rules:
//! - EU link: any of hosting, suspect, victim or provider-establishment
//!   country is a configured member state. Without one, nobody receives it.
//! - Hosted in a member state: that country's node (notice-and-takedown,
//!   unless it is the origin node, which sends the notice itself) and that
//!   country's police (investigation).
//! - Not hosted in a member state but linked through suspect, victim or
//!   provider: the police of each linked member state.
//!
//! This module decides; it never stores and never signs.

use meldnet_core::country::CountryCode;
use meldnet_core::identity::{Jurisdiction, Role, SpiffeId, TrustDomain};
use meldnet_core::report::Report;
use meldnet_proto::v1::Purpose;
use std::collections::BTreeSet;

/// The parties the router can send to.
#[derive(Debug, Clone)]
pub struct Router {
    federation: TrustDomain,
    member_states: BTreeSet<CountryCode>,
    participating: BTreeSet<CountryCode>,
    nodes: BTreeSet<CountryCode>,
    agencies: Vec<SpiffeId>,
}

/// One recipient of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTo {
    /// Who.
    pub identity: SpiffeId,
    /// To do what.
    pub purpose: Purpose,
    /// Why, in words.
    pub reason: String,
}

/// A routing decision before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Whether the report has an EU link.
    pub eu_link: bool,
    /// Each fact checked, in words.
    pub facts: Vec<String>,
    /// The recipients, without duplicates, in a stable order.
    pub recipients: Vec<RouteTo>,
    /// The decision in words.
    pub reasons: Vec<String>,
}

impl Router {
    /// A router over the registered nodes and agencies.
    pub fn new(
        federation: TrustDomain,
        member_states: impl IntoIterator<Item = CountryCode>,
        participating: impl IntoIterator<Item = CountryCode>,
        nodes: impl IntoIterator<Item = CountryCode>,
        agencies: Vec<SpiffeId>,
    ) -> Self {
        Router {
            federation,
            member_states: member_states.into_iter().collect(),
            participating: participating.into_iter().collect(),
            nodes: nodes.into_iter().collect(),
            agencies,
        }
    }

    fn police_of(&self, cc: CountryCode) -> Vec<SpiffeId> {
        self.agencies
            .iter()
            .filter(|a| matches!(a.role(), Role::Agency { jurisdiction: Jurisdiction::Country(c), .. } if *c == cc))
            .cloned()
            .collect()
    }

    /// Decides the route of a validated report.
    pub fn decide(&self, report: &Report) -> Route {
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
        let mut route = Route {
            eu_link: !linked.is_empty(),
            facts,
            recipients: Vec::new(),
            reasons: Vec::new(),
        };
        if linked.is_empty() {
            route.reasons.push(
                "no EU link: neither the hosting country nor the country of a suspect, a victim or the \
                 provider's main establishment is a member state; not routed inside the EU"
                    .into(),
            );
            return route;
        }
        let add = |route: &mut Route, identity: SpiffeId, purpose: Purpose, reason: String| {
            if !route.recipients.iter().any(|r| r.identity == identity) {
                route.recipients.push(RouteTo {
                    identity,
                    purpose,
                    reason,
                });
            }
        };
        let takes_part =
            |c: &CountryCode| self.member_states.contains(c) || self.participating.contains(c);
        match link.hosting.filter(takes_part) {
            Some(host) => {
                if host == report.origin {
                    route.reasons.push(format!(
                        "hosted in {host}, the origin node's own country: its hotline sends the notice itself"
                    ));
                } else if self.nodes.contains(&host) {
                    add(
                        &mut route,
                        SpiffeId::node(&self.federation, host),
                        Purpose::NoticeAndTakedown,
                        format!("hosted in {host}: notice-and-takedown by the hotline of {host}"),
                    );
                } else {
                    route.reasons.push(format!(
                        "hosted in {host}, but no node of {host} is registered"
                    ));
                }
                let police = self.police_of(host);
                if police.is_empty() {
                    route
                        .reasons
                        .push(format!("no police agency of {host} is registered"));
                }
                for p in police {
                    add(
                        &mut route,
                        p,
                        Purpose::Investigation,
                        format!("hosted in {host}: investigation by the police of {host}"),
                    );
                }
            }
            None => {
                for (name, c) in linked.iter().filter(|(n, _)| *n != "hosting_country") {
                    let police = self.police_of(*c);
                    if police.is_empty() {
                        route
                            .reasons
                            .push(format!("{name} {c}: no police agency of {c} is registered"));
                    }
                    for p in police {
                        add(
                            &mut route,
                            p,
                            Purpose::Investigation,
                            format!("{name} {c}: investigation by the police of {c}"),
                        );
                    }
                }
            }
        }
        if route.recipients.is_empty() {
            route
                .reasons
                .push("EU link, but no registered recipient: stored, delivered to nobody".into());
        } else {
            let who: Vec<String> = route
                .recipients
                .iter()
                .map(|r| r.identity.to_string())
                .collect();
            route.reasons.push(format!("routed to {}", who.join(", ")));
        }
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_core::hash::{Md5, Sha256};
    use meldnet_core::report::*;

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
            meldnet_core::country::EU_MEMBER_STATES
                .iter()
                .map(|c| cc(c)),
            [cc("NO")],
            [cc("NL"), cc("DE"), cc("FR"), cc("NO")],
            agencies,
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

    fn ids(r: &Route) -> Vec<String> {
        r.recipients
            .iter()
            .map(|r| r.identity.to_string())
            .collect()
    }

    #[test]
    fn hosted_in_member_state_goes_to_its_node_and_police() {
        let r = router().decide(&report(
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
                "spiffe://eu.meldnet.test/agency/DE/bka"
            ]
        );
        assert_eq!(r.recipients[0].purpose, Purpose::NoticeAndTakedown);
    }

    #[test]
    fn no_eu_link_goes_nowhere_and_says_why() {
        let r = router().decide(&report(
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
        let r = router().decide(&report(
            "FR",
            EuLinkFacts {
                hosting: Some(cc("US")),
                suspect: Some(cc("NL")),
                ..Default::default()
            },
        ));
        assert_eq!(ids(&r), ["spiffe://eu.meldnet.test/agency/NL/politie"]);
    }

    #[test]
    fn a_participating_country_links_like_a_member_state() {
        let r = router().decide(&report(
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
        assert_eq!(ids(&r), ["spiffe://eu.meldnet.test/node/NO"]);
        assert!(
            r.reasons
                .iter()
                .any(|x| x == "no police agency of NO is registered"),
            "{:?}",
            r.reasons
        );
    }

    #[test]
    fn own_country_hosting_skips_own_node() {
        let r = router().decide(&report(
            "DE",
            EuLinkFacts {
                hosting: Some(cc("DE")),
                ..Default::default()
            },
        ));
        assert_eq!(ids(&r), ["spiffe://eu.meldnet.test/agency/DE/bka"]);
    }
}
