//! The one error type of `core`, and its exhaustive mapping to `tonic::Status`.
//! The REST adapter maps `Status` on to HTTP (`rest::error`), so a variant
//! added here cannot be forgotten by either transport.

use tonic::{Code, Status, metadata::MetadataValue};

/// Metadata key that tells the REST adapter which HTTP status to use where one
/// gRPC code stands for two (413 vs 429, 400 vs 415). Never reaches a client.
pub const HTTP_STATUS_HINT: &str = "x-swrm-http-status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A body or file over its limit (HTTP 413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Not a content type we accept (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Rate limited (HTTP 429 with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
        /// The bucket's policy, for the `RateLimit` headers.
        policy: Option<crate::limits::Policy>,
    },
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    /// Something broke on our side. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        // A unique index said no: a duplicate, the caller's to resolve (409).
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
            return Self::AlreadyExists("already exists".into());
        }
        if stalled(&e) {
            tracing::warn!(error = %e, "database not answering in time");
            return Self::Unavailable(
                "the database is not answering in time; retry shortly".into(),
            );
        }
        Self::Internal(format!("database: {e}"))
    }
}

/// The database is busy, locked, timed out or unreachable: nothing wrong
/// with the request, worth retrying (503, not 500).
fn stalled(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    let sqlx_error = match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => s,
        _ => return false,
    };
    match sqlx_error.as_ref() {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<u32>() {
                // SQLite: SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended or not.
                Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6),
                // PostgreSQL: lock_timeout, statement_timeout, shutting
                // down, too many connections.
                Err(_) => matches!(
                    code.as_ref(),
                    "55P03" | "57014" | "57P01" | "57P03" | "53300"
                ),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

fn with_hint(mut status: Status, http: u16) -> Status {
    status
        .metadata_mut()
        .insert(HTTP_STATUS_HINT, MetadataValue::from(http));
    status
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::PayloadTooLarge(m) => with_hint(Status::resource_exhausted(m), 413),
            Error::UnsupportedMediaType(m) => with_hint(Status::invalid_argument(m), 415),
            Error::RateLimited {
                message,
                retry_after_secs,
                policy,
            } => {
                let mut s = with_hint(Status::resource_exhausted(message), 429);
                let metadata = s.metadata_mut();
                metadata.insert("retry-after", MetadataValue::from(retry_after_secs));
                if let Some(policy) = policy {
                    for (name, value) in [
                        ("ratelimit-policy", policy.header()),
                        ("ratelimit", policy.exhausted(retry_after_secs)),
                    ] {
                        if let Ok(value) = value.parse() {
                            metadata.insert(name, value);
                        }
                    }
                }
                s
            }
            Error::Unimplemented(m) => Status::unimplemented(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Internal(detail) => {
                // Logged here, once: the boundary every handler error passes.
                tracing::error!(error = %detail, "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}
