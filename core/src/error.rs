//! Refusals: why an input was not accepted, naming the field. The one place
//! where a refusal becomes a gRPC status is `impl From<Refusal> for Status`.

use meldnet_proto::v1 as pb;
use tonic::{Code, Status};

/// Which kind of refusal; each maps to exactly one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Malformed, out of range or not verifying.
    InvalidArgument,
    /// The caller's certificate does not allow this.
    PermissionDenied,
    /// Same id, different content.
    AlreadyExists,
    /// Something the request relies on is not registered (an unknown key).
    FailedPrecondition,
    /// Too large.
    ResourceExhausted,
    /// What the request names does not exist (a case, a report).
    NotFound,
    /// The hub could not store or sign; the client may retry.
    Unavailable,
}

impl RefusalKind {
    /// The gRPC status code of this kind.
    pub fn code(self) -> Code {
        match self {
            RefusalKind::InvalidArgument => Code::InvalidArgument,
            RefusalKind::PermissionDenied => Code::PermissionDenied,
            RefusalKind::AlreadyExists => Code::AlreadyExists,
            RefusalKind::FailedPrecondition => Code::FailedPrecondition,
            RefusalKind::ResourceExhausted => Code::ResourceExhausted,
            RefusalKind::NotFound => Code::NotFound,
            RefusalKind::Unavailable => Code::Unavailable,
        }
    }
}

/// An input refused, with the field it is about (`report.items[2].sha256`)
/// and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Refusal {
    /// Which gRPC code this becomes.
    pub kind: RefusalKind,
    /// Path of the offending field, as in the protocol.
    pub field: String,
    /// Why, in words a client developer can act on.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `kind` about `field`.
    pub fn new(kind: RefusalKind, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            kind,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for the most common kind.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(RefusalKind::InvalidArgument, field, reason)
    }

    /// The same refusal about a field nested under `prefix`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }

    /// The refusal as carried in a `SubmitResult` of a streamed batch.
    pub fn to_proto(&self) -> pb::Refusal {
        pb::Refusal {
            code: self.kind.code() as i32,
            message: self.to_string(),
        }
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        Status::new(r.kind.code(), r.to_string())
    }
}

/// An error and its causes, joined by ": ", leaving out a cause whose text
/// the message already carries (our error messages name their cause).
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_field() {
        let s: Status = Refusal::invalid("sha256", "expected 64 hex digits")
            .under("report.items[2]")
            .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "report.items[2].sha256: expected 64 hex digits"
        );
    }
}
