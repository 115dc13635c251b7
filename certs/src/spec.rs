//! Command-line names of parties turned into SPIFFE ids, checked by the same
//! rules the hub applies to certificates (`meldnet_core::identity`), so that
//! the tool can never make a certificate the hub would not understand.

use crate::error::{CertsError, Result};
use meldnet_core::CountryCode;
use meldnet_core::{Jurisdiction, Role, SpiffeId, TrustDomain};

/// Parses the federation's trust domain.
pub fn federation(s: &str) -> Result<TrustDomain> {
    TrustDomain::parse(s).map_err(|e| CertsError::invalid("--federation", s, e))
}

/// A node's id from its country code, e.g. `NL`.
pub fn node(federation: &TrustDomain, cc: &str) -> Result<SpiffeId> {
    let cc = CountryCode::parse(cc).map_err(|e| CertsError::invalid("node country", cc, e))?;
    Ok(SpiffeId::node(federation, cc))
}

/// An agency's id from `JURISDICTION/name`, e.g. `DE/bka` or `EU/europol`.
pub fn agency(federation: &TrustDomain, spec: &str) -> Result<SpiffeId> {
    let bad = |message: String| CertsError::invalid("agency", spec, message);
    let (j, name) = spec
        .split_once('/')
        .filter(|(_, name)| !name.contains('/'))
        .ok_or_else(|| bad("expected JURISDICTION/name, e.g. DE/bka or EU/europol".into()))?;
    let jurisdiction: Jurisdiction = j
        .parse()
        .map_err(|e| bad(format!("{e} (or EU for EU bodies)")))?;
    let id = SpiffeId::parse(&format!(
        "spiffe://{federation}/agency/{jurisdiction}/{name}"
    ))
    .map_err(|e| bad(e.to_string()))?;
    match id.role() {
        Role::Agency { .. } => Ok(id),
        _ => Err(bad("not an agency".into())),
    }
}

/// A national regulator's id from `CC/name`, e.g. `DE/bnetza`: it
/// receives escalations of missed takedown deadlines, where configured.
pub fn regulator(federation: &TrustDomain, spec: &str) -> Result<SpiffeId> {
    country_party(federation, "regulator", spec, "DE/bnetza")
}

/// A victim's representative's id from `CC/name`, e.g. `NL/fier`: it
/// receives the notifications victims chose.
pub fn representative(federation: &TrustDomain, spec: &str) -> Result<SpiffeId> {
    country_party(federation, "representative", spec, "NL/fier")
}

/// `spiffe://<federation>/<kind>/<CC>/<name>` from `CC/name`.
fn country_party(
    federation: &TrustDomain,
    kind: &'static str,
    spec: &str,
    example: &str,
) -> Result<SpiffeId> {
    let bad = |message: String| CertsError::invalid(kind, spec, message);
    let (cc, name) = spec
        .split_once('/')
        .filter(|(_, name)| !name.contains('/'))
        .ok_or_else(|| bad(format!("expected CC/name, e.g. {example}")))?;
    let cc = CountryCode::parse(cc).map_err(|e| bad(e.to_string()))?;
    let id = SpiffeId::parse(&format!("spiffe://{federation}/{kind}/{cc}/{name}"))
        .map_err(|e| bad(e.to_string()))?;
    match id.role() {
        Role::Regulator { .. } if kind == "regulator" => Ok(id),
        Role::Representative { .. } if kind == "representative" => Ok(id),
        _ => Err(bad(format!("not a {kind}"))),
    }
}

/// An operator's id from its name, e.g. `admin`.
pub fn operator(federation: &TrustDomain, name: &str) -> Result<SpiffeId> {
    let bad = |message: String| CertsError::invalid("operator", name, message);
    if name.contains('/') {
        return Err(bad("a name has no '/'".into()));
    }
    let id = SpiffeId::parse(&format!("spiffe://{federation}/operator/{name}"))
        .map_err(|e| bad(e.to_string()))?;
    match id.role() {
        Role::Operator(_) => Ok(id),
        _ => Err(bad("not an operator".into())),
    }
}

/// Refuses a list that names the same party twice: both would get the same
/// folder, and the second would silently replace the first.
pub fn no_duplicates(what: &'static str, ids: &[SpiffeId]) -> Result<()> {
    let mut sorted: Vec<&SpiffeId> = ids.iter().collect();
    sorted.sort();
    match crate::ledger::repeated(&sorted) {
        Some(id) => Err(CertsError::invalid(what, &id.to_string(), "given twice")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed() -> TrustDomain {
        TrustDomain::parse("eu.meldnet.test").unwrap()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            node(&fed(), "NL").unwrap().to_string(),
            "spiffe://eu.meldnet.test/node/NL"
        );
        assert_eq!(
            agency(&fed(), "EU/europol").unwrap().to_string(),
            "spiffe://eu.meldnet.test/agency/EU/europol"
        );
        assert_eq!(
            agency(&fed(), "DE/bka").unwrap().to_string(),
            "spiffe://eu.meldnet.test/agency/DE/bka"
        );
        assert_eq!(
            operator(&fed(), "admin").unwrap().to_string(),
            "spiffe://eu.meldnet.test/operator/admin"
        );
    }

    #[test]
    fn refuses_what_the_hub_would_refuse() {
        for cc in ["XX", "nl", "EU", "NLD", ""] {
            assert!(node(&fed(), cc).is_err(), "{cc}");
        }
        for spec in [
            "DE", "DE/BKA", "XX/bka", "DE/bka/x", "/bka", "DE/", "de/bka", "DE/b_ka",
        ] {
            assert!(agency(&fed(), spec).is_err(), "{spec}");
        }
        for name in ["Admin", "a/b", "", "x y"] {
            assert!(operator(&fed(), name).is_err(), "{name}");
        }
        assert!(federation("EU.test").is_err());
        assert!(federation("eu.meldnet.test").is_ok());
    }

    #[test]
    fn refuses_duplicates() {
        let ids = vec![
            node(&fed(), "NL").unwrap(),
            node(&fed(), "DE").unwrap(),
            node(&fed(), "NL").unwrap(),
        ];
        let e = no_duplicates("--nodes", &ids).unwrap_err().to_string();
        assert!(e.contains("node/NL") && e.contains("twice"), "{e}");
        assert!(no_duplicates("--nodes", &ids[..2]).is_ok());
    }
}
