//! An HTTP/3 client for the tests: quinn + h3, trusting the gateway's self-signed certificate.

use super::Reply;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request};
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// No HTTP/3 exchange here should take anywhere near this long.
const DEADLINE: Duration = Duration::from_secs(60);

/// An HTTP/3 client connection to the gateway.
pub struct H3Client {
    endpoint: quinn::Endpoint,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    port: u16,
}

impl H3Client {
    pub async fn connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).expect("a usable certificate");
        let mut tls = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = tokio::time::timeout(DEADLINE, async {
            endpoint
                .connect(addr, "localhost")
                .unwrap()
                .await
                .expect("QUIC handshake")
        })
        .await
        .expect("handshake before the deadline");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .expect("HTTP/3 connection");
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Self {
            endpoint,
            send,
            driver,
            port: addr.port(),
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.port));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).unwrap();
        let mut send = self.send.clone();
        let exchange = async move {
            let mut stream = send.send_request(request).await.expect("request sent");
            if let Some(body) = body {
                // Several DATA frames, as a streaming client would send them.
                for chunk in body.chunks(64 << 10) {
                    stream
                        .send_data(Bytes::copy_from_slice(chunk))
                        .await
                        .expect("body sent");
                }
            }
            stream.finish().await.expect("request finished");
            let response = stream.recv_response().await.expect("response headers");
            let mut bytes = BytesMut::new();
            let body = loop {
                match stream.recv_data().await {
                    Ok(Some(mut chunk)) => {
                        let chunk = chunk.copy_to_bytes(chunk.remaining());
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break Ok(bytes.freeze()),
                    Err(e) => break Err(e.to_string()),
                }
            };
            let (parts, ()) = response.into_parts();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("HTTP/3 request finished before the deadline")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], None).await
    }

    pub async fn close(self) {
        drop(self.send);
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        self.driver.abort();
    }
}
