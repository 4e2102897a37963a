//! TLS on the one listener: HTTPS (HTTP/2 and HTTP/1.1 by ALPN), gRPC over
//! TLS, a certificate renewed on disk served without a restart, and files
//! that cannot be used refused at start.

use crate::common::{self, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::{path::Path, sync::Arc, time::Duration};
use swrm::proto;
use tokio_rustls::rustls::{self, crypto::ring, pki_types::CertificateDer};

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
pub(crate) fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    (made.cert.pem(), made.key_pair.serialize_pem())
}

pub(crate) fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // Written beside, then renamed: the server never reads half a file.
    for (name, pem) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

async fn tls_server(dir: &Path) -> TestServer {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    common::start_with(move |c| {
        c.tls.tls_cert = Some(cert);
        c.tls.tls_key = Some(key);
    })
    .await
}

/// An HTTPS client that trusts only `cert_pem` and finds `localhost` at the server.
fn client(s: &TestServer, cert_pem: &str, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", s.addr)
        .timeout(Duration::from_secs(10));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn url(s: &TestServer, path: &str) -> String {
    format!("https://localhost:{}{path}", s.addr.port())
}

#[tokio::test]
async fn https_serves_rest_over_http2_and_http1_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let pair = certificate();
    write_pair(dir.path(), &pair);
    let s = tls_server(dir.path()).await;

    let h2 = client(&s, &pair.0, false);
    let a = h2.get(url(&s, "/healthz")).send().await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(a.version(), reqwest::Version::HTTP_2, "h2 by ALPN");

    // A device's whole first minute, over HTTP/1.1 with TLS.
    let h1 = client(&s, &pair.0, true);
    let created: serde_json::Value = h1
        .post(url(&s, "/api/v1/devices"))
        .bearer_auth(&s.owner_key)
        .json(&json!({"name": "tls-cam"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paired = h1
        .post(url(&s, "/api/public/v1/pair"))
        .json(&json!({"provisioning_token": created["provisioning_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(paired.version(), reqwest::Version::HTTP_11);
    assert_eq!(paired.status(), StatusCode::OK);
    let key = paired.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let beat = h1
        .post(url(&s, "/api/public/v1/heartbeat"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), StatusCode::OK);

    // Cleartext on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", s.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != StatusCode::OK,
        "plain HTTP must not be served on a TLS listener"
    );
}

#[tokio::test]
async fn grpc_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pair = certificate();
    write_pair(dir.path(), &pair);
    let s = tls_server(dir.path()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(
            rustls_pemfile_der(&pair.0).expect("one certificate"),
        ))
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = s.addr;
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("gRPC over TLS connects");
    let mut admin = swrm::proto::admin_service_client::AdminServiceClient::new(channel);
    let mut req = tonic::Request::new(proto::ListDevicesRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", s.owner_key).parse().unwrap(),
    );
    let listed = admin.list_devices(req).await.expect("ListDevices over TLS");
    assert!(listed.into_inner().devices.is_empty());
}

/// The DER of the first certificate of a PEM text.
fn rustls_pemfile_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (certificate(), certificate());
    write_pair(dir.path(), &old);
    let s = tls_server(dir.path()).await;
    let trusts_old = client(&s, &old.0, true);
    let trusts_new = client(&s, &new.0, true);
    assert!(trusts_old.get(url(&s, "/livez")).send().await.is_ok());
    assert!(trusts_new.get(url(&s, "/livez")).send().await.is_err());

    write_pair(dir.path(), &new);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // A fresh client each time: no pooled connection from before.
        if client(&s, &new.0, true)
            .get(url(&s, "/livez"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client(&s, &old.0, true)
            .get(url(&s, "/livez"))
            .send()
            .await
            .is_err()
    );

    // A broken renewal (a key that does not fit) keeps the good one.
    std::fs::write(dir.path().join("key.pem"), certificate().1).unwrap();
    tokio::time::sleep(swrm::tls::WATCH_EVERY * 2).await;
    assert!(
        client(&s, &new.0, true)
            .get(url(&s, "/livez"))
            .send()
            .await
            .is_ok()
    );
}

#[test]
fn files_that_cannot_be_used_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate();
    let (_, other_key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &other_key).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let args = |cert: &str, key: &str| swrm::tls::TlsArgs {
        tls_cert: Some(dir.path().join(cert)),
        tls_key: Some(dir.path().join(key)),
    };
    for (c, k, names) in [
        ("cert.pem", "key.pem", "key.pem"),
        ("empty.pem", "key.pem", "empty.pem"),
        ("missing.pem", "key.pem", "missing.pem"),
    ] {
        let e = swrm::tls::Tls::from_args(&args(c, k))
            .err()
            .unwrap_or_else(|| panic!("{c} + {k} must be refused"));
        assert!(e.to_string().contains(names), "{e}");
    }
    assert!(
        swrm::tls::Tls::from_args(&swrm::tls::TlsArgs::default())
            .unwrap()
            .is_none()
    );
}
