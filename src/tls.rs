//! TLS with rustls on the one listener: HTTPS, gRPC over TLS (HTTP/2,
//! chosen by ALPN) and gRPC-web, from a PEM certificate chain and key.
//!
//! The files are read again on SIGHUP and whenever their content changes
//! (checked every [`WATCH_EVERY`]), so a renewed certificate (certbot, a
//! Kubernetes secret) is served without a restart. New connections get the
//! new certificate; open ones keep theirs. A reload that fails (a half
//! written file, a key that does not match) keeps the certificate being
//! served and says why in the log.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};
use tokio_util::sync::CancellationToken;

/// How often the files are compared with what is being served.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first). With `--tls-key`, the listener
    /// speaks TLS only: HTTPS, gRPC over TLS and gRPC-web.
    #[arg(long, env = "SWRM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    #[arg(long, env = "SWRM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The certificate being served, and where it came from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// The acceptor of new connections and the file contents it was built from.
    current: RwLock<(TlsAcceptor, Pem)>,
}

impl Tls {
    /// `None` without `--tls-cert`; an error when the files cannot be used.
    pub fn from_args(args: &TlsArgs) -> std::io::Result<Option<Arc<Self>>> {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Ok(None);
        };
        let read = contents(cert, key)?;
        let acceptor = acceptor(cert, key, &read)?;
        Ok(Some(Arc::new(Self {
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new((acceptor, read)),
        })))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("tls lock").0.clone()
    }

    /// Reads the files again; serves them if they changed and are usable.
    /// Answers whether the certificate changed.
    pub fn reload(&self) -> std::io::Result<bool> {
        let read = contents(&self.cert, &self.key)?;
        if self.current.read().expect("tls lock").1 == read {
            return Ok(false);
        }
        let acceptor = acceptor(&self.cert, &self.key, &read)?;
        *self.current.write().expect("tls lock") = (acceptor, read);
        Ok(true)
    }

    /// Reloads on SIGHUP and when the files change, until `stop`.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut hangup = hangups();
            loop {
                let asked = tokio::select! {
                    _ = every.tick() => false,
                    () = next_hangup(&mut hangup) => true,
                    () = stop.cancelled() => return,
                };
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded")
                    }
                    Ok(false) if asked => {
                        tracing::info!("SIGHUP: the TLS certificate files are unchanged")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        });
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(signal: &mut Hangups) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}

/// The certificate chain's and the key's files, as read.
type Pem = (Vec<u8>, Vec<u8>);

fn contents(cert: &Path, key: &Path) -> std::io::Result<Pem> {
    Ok((
        std::fs::read(cert).map_err(|e| named(cert, e))?,
        std::fs::read(key).map_err(|e| named(key, e))?,
    ))
}

fn named(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{}: {e}", path.display()),
    )
}

/// An acceptor for the files read (`cert` and `key` name them in errors),
/// offering HTTP/2 then HTTP/1.1 by ALPN.
fn acceptor(cert: &Path, key: &Path, (chain, private): &Pem) -> std::io::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| named(cert, e))?;
    if chain.is_empty() {
        return Err(named(cert, "no PEM certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_slice(private).map_err(|e| named(key, e))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| named(cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| named(key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
