//! Building a report from an analyst's input and the files the hotline
//! holds, and signing it over its exact encoded bytes.

use crate::hashing::{hash_file, media_type_of};
use crate::list::NodeList;
use meldnet_core::time::now_ms;
use meldnet_core::CountryCode;
use meldnet_core::{
    AgeGroup, Classification, EuLinkFacts, Item, MediaType, Report, ReportId, ReportUrl,
};
use meldnet_core::{Context, SigningKey};
use meldnet_list::Query;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::path::PathBuf;

/// What an analyst says about a report.
#[derive(Debug, Clone)]
pub struct ReportInput {
    /// Where the material was seen.
    pub url: String,
    /// EU-link facts.
    pub eu_link: EuLinkFacts,
    /// Applies to every file.
    pub classification: Classification,
    /// Applies to every file.
    pub age_group: AgeGroup,
    /// Applies to every file; guessed from each name when not given.
    pub media_type: Option<MediaType>,
    /// The files the hotline holds; only their hashes go into the report.
    pub files: Vec<PathBuf>,
}

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The input does not make a valid report.
    #[error("{0}")]
    Invalid(#[from] meldnet_core::Refusal),
}

/// Hashes the files and builds a validated report of this node's country;
/// with the node's copy of the known-hash list, each item is marked known
/// (and how) or new.
pub fn build(
    origin: CountryCode,
    input: &ReportInput,
    list: Option<&NodeList>,
) -> Result<Report, BuildError> {
    let mut items = Vec::with_capacity(input.files.len());
    for f in &input.files {
        let h = hash_file(f).map_err(|source| BuildError::File {
            path: f.display().to_string(),
            source,
        })?;
        // An image that does not decode still has its exact hashes: the
        // report goes out without a PDQ for it, and the analyst is told.
        let pdq = crate::picture::pdq_if_image(f).unwrap_or_else(|e| {
            tracing::warn!(file = %f.display(), error = %e, "no PDQ hash for this file");
            eprintln!("warning: {}: no PDQ hash: {e}", f.display());
            None
        });
        let mut item = Item {
            sha256: h.sha256,
            md5: h.md5,
            pdq,
            classification: input.classification,
            age_group: input.age_group,
            media_type: input.media_type.unwrap_or_else(|| media_type_of(f)),
            known: None,
        };
        item.known = list.map(|l| l.check(&Query::of_item(&item)));
        items.push(item);
    }
    let url = ReportUrl::parse(&input.url).map_err(|e| meldnet_core::Refusal::invalid("url", e))?;
    let report = Report {
        id: ReportId::new_v7(),
        origin,
        created_at_ms: now_ms(),
        url,
        eu_link: input.eu_link,
        items,
    };
    // Through the wire form and back: what is stored is what the hub will accept.
    Ok(Report::from_proto(&report.to_proto())?)
}

/// Signs the exact encoding of `report`; these bytes travel and are stored as they are.
pub fn sign(report: &pb::Report, key: &SigningKey) -> pb::SignedReport {
    let bytes = report.encode_to_vec();
    let signature = key.sign(Context::Report, &bytes);
    pb::SignedReport {
        report: bytes,
        signature: signature.to_vec(),
        key_id: key.public().id().to_string(),
    }
}
