//! TLS 1.3 as libp2p specifies it (`/tls/1.0.0`), preferring AES-GCM.
//!
//! libp2p-tls lists ChaCha20-Poly1305 first, and rustls follows the
//! client's order, so two libp2p-tls peers always agree on ChaCha20. On
//! CPUs with AES and carry-less multiply instructions AES-GCM costs a
//! fraction of that, and encryption is the largest CPU cost of a chunk
//! transfer, so these configs list AES-GCM first (as rustls does by
//! default) and the server picks by its own order. Everything about
//! identities stays libp2p-tls': [`certificate::generate`] makes the
//! self-signed certificate that carries the node's key, and
//! [`certificate::parse`] checks a peer's (its self-signature, validity and
//! the signature of the libp2p key over it) and names its peer id.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

/// The protocol name both ends agree on before the handshake.
pub(super) const PROTOCOL: &str = "/tls/1.0.0";
/// The ALPN token the libp2p TLS handshake carries.
const ALPN: &[u8] = b"libp2p";
/// Cipher suites, most preferred first.
const CIPHER_SUITES: [rustls::SupportedCipherSuite; 3] = [
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];
/// The signature schemes a peer's certificate key may use (those
/// [`certificate::P2pCertificate::verify_signature`] checks).
const SIGNATURE_SCHEMES: [SignatureScheme; 9] = [
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// Why the TLS configs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate that carries the node's key could not be made.
    #[error("making the TLS certificate: {0}")]
    Certificate(#[from] certificate::GenError),
    /// rustls refused the settings or the certificate.
    #[error("setting up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client and server configs of one node. Cloning is shallow.
#[derive(Clone)]
pub(super) struct TlsConfigs {
    /// For connections this node dials.
    pub client: Arc<rustls::ClientConfig>,
    /// For connections this node accepts.
    pub server: Arc<rustls::ServerConfig>,
}

impl TlsConfigs {
    /// Configs that present a certificate for `key` and accept any peer
    /// with a valid libp2p certificate (who it is, the swarm checks).
    pub(super) fn new(key: &Keypair) -> Result<Self, TlsSetupError> {
        let (cert, private_key) = certificate::generate(key)?;
        let mut provider = aws_lc_rs::default_provider();
        provider.cipher_suites = CIPHER_SUITES.to_vec();
        // Not `CertifiedKey::from_der`: webpki, which it asks to match the
        // key to the certificate, refuses the libp2p extension (critical,
        // and unknown to it).
        let certified = Arc::new(CertifiedKey::new(
            vec![cert],
            provider.key_provider.load_private_key(private_key)?,
        ));
        let provider = Arc::new(provider);
        let versions = &[&rustls::version::TLS13];

        let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerCertificates))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&certified))));
        client.alpn_protocols = vec![ALPN.to_vec()];
        // Every connection proves its certificate: no session is resumed
        // (all peers share the one server name, so a client's cached
        // sessions would be offered to every peer).
        client.resumption = rustls::client::Resumption::disabled();

        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(Arc::new(PeerCertificates))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        // A dialer using libp2p-tls lists ChaCha20 first; pick AES-GCM.
        server.ignore_client_order = true;

        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// The name a client gives: none (the libp2p TLS spec forbids SNI, and an
/// unspecified address makes rustls send none).
pub(super) fn no_server_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
}

/// The peer id in the one certificate a finished handshake's peer
/// presented, already checked by [`PeerCertificates`].
pub(super) fn peer_id(connection: &rustls::CommonState) -> Result<PeerId, rustls::Error> {
    match connection.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert).map_err(bad_certificate)?.peer_id()),
        _ => Err(rustls::Error::NoCertificatesPresented),
    }
}

/// Accepts exactly one certificate that libp2p-tls parses and verifies,
/// and handshake signatures made with its key.
#[derive(Debug)]
struct PeerCertificates;

impl PeerCertificates {
    fn check(
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p peer presents exactly one certificate".into(),
            ));
        }
        certificate::parse(end_entity).map_err(bad_certificate)?;
        Ok(())
    }

    fn check_signature(
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)
            .map_err(bad_certificate)?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(bad_certificate)?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PeerCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _server_name: &ServerName,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SIGNATURE_SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for PeerCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SIGNATURE_SCHEMES.to_vec()
    }
}

/// TLS 1.2 is never configured; a signature for it is refused all the same.
fn tls12_refused() -> rustls::Error {
    rustls::Error::General("only TLS 1.3 is spoken".into())
}

/// A certificate libp2p-tls rejected, as a rustls error.
fn bad_certificate(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_rustls::{TlsAcceptor, TlsConnector};
    use libp2p::core::upgrade::OutboundConnectionUpgrade;
    use rustls::CipherSuite;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    /// Both ends of one loopback TCP connection, as futures-io streams.
    async fn connected() -> (Compat<TcpStream>, Compat<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (dialed.unwrap().compat(), accepted.unwrap().0.compat())
    }

    /// A certificate without the libp2p extension, and its key.
    fn plain_certificate() -> (
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let certified = rcgen::generate_simple_self_signed(vec!["peer".into()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
        (certified.cert.into(), key.into())
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(aws_lc_rs::default_provider())
    }

    #[tokio::test]
    async fn both_ends_learn_the_other_peer_id_and_agree_on_aes_gcm() {
        let (dialer, listener) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (to_listener, to_dialer) = connected().await;
        let (client, server) = tokio::join!(
            TlsConnector::from(TlsConfigs::new(&dialer).unwrap().client)
                .connect(no_server_name(), to_listener),
            TlsAcceptor::from(TlsConfigs::new(&listener).unwrap().server).accept(to_dialer),
        );
        let (client, server) = (client.unwrap(), server.unwrap());
        assert_eq!(
            peer_id(client.get_ref().1).unwrap(),
            listener.public().to_peer_id()
        );
        assert_eq!(
            peer_id(server.get_ref().1).unwrap(),
            dialer.public().to_peer_id()
        );
        let suite = client.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(suite.suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[tokio::test]
    async fn a_second_connection_proves_its_certificate_again() {
        let (dialer, listener) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (dialer, listener) = (
            TlsConfigs::new(&dialer).unwrap(),
            TlsConfigs::new(&listener).unwrap(),
        );
        for _ in 0..2 {
            let (to_listener, to_dialer) = connected().await;
            let (client, server) = tokio::join!(
                TlsConnector::from(Arc::clone(&dialer.client))
                    .connect(no_server_name(), to_listener),
                TlsAcceptor::from(Arc::clone(&listener.server)).accept(to_dialer),
            );
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            assert_eq!(
                client.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full)
            );
            assert!(peer_id(server.get_ref().1).is_ok());
            // A byte each way, so that any session ticket the server
            // sends after the handshake reaches the client.
            use futures::{AsyncReadExt, AsyncWriteExt};
            let mut byte = [0u8; 1];
            let (sent, read) = tokio::join!(
                async {
                    server.write_all(b"x").await?;
                    server.flush().await
                },
                client.read_exact(&mut byte),
            );
            sent.unwrap();
            read.unwrap();
        }
    }

    #[tokio::test]
    async fn a_libp2p_tls_dialer_that_prefers_chacha20_gets_aes_gcm() {
        let (dialer, listener) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (to_listener, to_dialer) = connected().await;
        let (client, server) = tokio::join!(
            libp2p::tls::Config::new(&dialer)
                .unwrap()
                .upgrade_outbound(to_listener, PROTOCOL),
            TlsAcceptor::from(TlsConfigs::new(&listener).unwrap().server).accept(to_dialer),
        );
        let (seen, _) = client.unwrap();
        assert_eq!(seen, listener.public().to_peer_id());
        let suite = server
            .unwrap()
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap();
        assert_eq!(suite.suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[tokio::test]
    async fn a_client_without_a_libp2p_certificate_is_refused() {
        let (cert, key) = plain_certificate();
        let stranger = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerCertificates))
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        let listener = TlsConfigs::new(&Keypair::generate_ed25519()).unwrap();
        let (to_listener, to_dialer) = connected().await;
        let (_, server) = tokio::join!(
            TlsConnector::from(Arc::new(stranger)).connect(no_server_name(), to_listener),
            TlsAcceptor::from(listener.server).accept(to_dialer),
        );
        let error = server.expect_err("a certificate without the libp2p key is refused");
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[tokio::test]
    async fn a_server_without_a_libp2p_certificate_is_refused() {
        let (cert, key) = plain_certificate();
        let stranger = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let dialer = TlsConfigs::new(&Keypair::generate_ed25519()).unwrap();
        let (to_listener, to_dialer) = connected().await;
        let (client, _) = tokio::join!(
            TlsConnector::from(dialer.client).connect(no_server_name(), to_listener),
            TlsAcceptor::from(Arc::new(stranger)).accept(to_dialer),
        );
        let error = client.expect_err("a certificate without the libp2p key is refused");
        assert!(error.to_string().contains("certificate"), "{error}");
    }
}
