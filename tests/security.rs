//! Transport security with a real server and real clients on loopback: TLS, mutual TLS with
//! certificates made by `strata certs`' own code, and client tokens checked on every call,
//! revoked by editing the tokens file while the server runs.

use std::path::Path;
use std::time::Duration;

use strata_client::{ClientError, ClientTls};
use strata_proto::pb;
use strata_security::certs::{CertAndKey, LocalPki};
use strata_security::token_file::line_for;
use strata_server::{ServerEvent, ServerTls};
use strata_tests::{synthetic_config, torch_backend};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

type RunHandle = JoinHandle<Result<strata_server::RunOutcome, strata_server::ServerError>>;

fn pki(clients: usize) -> LocalPki {
    let names: Vec<String> = strata_security::certs::DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    strata_security::certs::generate(&names, clients).expect("certificates")
}

/// Replaces the tokens file the way `mv` does, so the server sees one version or the other.
fn write_tokens(path: &Path, lines: &[String]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n").expect("write tokens");
    std::fs::rename(&tmp, path).expect("replace tokens");
}

/// Starts a TLS server on `127.0.0.1:0`; returns its https URL, its run and its events.
async fn start_tls_server(
    options: strata_server::ServerOptions,
) -> (String, RunHandle, tokio::sync::broadcast::Receiver<ServerEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let (events, receiver) = tokio::sync::broadcast::channel(4096);
    let options = strata_server::ServerOptions { events: Some(events), ..options };
    (url, tokio::spawn(strata_server::run(options, listener, std::future::pending())), receiver)
}

fn server_tls(pki: &LocalPki, mutual: bool) -> ServerTls {
    ServerTls {
        cert_pem: pki.server.cert_pem.clone().into_bytes(),
        key_pem: pki.server.key_pem.clone().into_bytes(),
        client_ca_pem: mutual.then(|| pki.ca.cert_pem.clone().into_bytes()),
    }
}

fn client_tls(server_ca: &CertAndKey, identity: Option<&CertAndKey>) -> ClientTls {
    ClientTls {
        ca_pem: server_ca.cert_pem.clone().into_bytes(),
        identity: identity.map(|c| (c.cert_pem.clone().into_bytes(), c.key_pem.clone().into_bytes())),
        domain: None,
    }
}

fn client_options(url: &str, tls: ClientTls, token: Option<&str>) -> strata_client::ClientOptions {
    let mut options = strata_client::ClientOptions::new(url);
    options.device = "cpu".into();
    options.tls = Some(tls);
    options.token = token.map(str::to_string);
    options.connect_timeout = Duration::from_secs(3);
    options
}

/// Refused in the TLS handshake, before Join ran: the client sees the server's alert, or
/// only the closed connection when the server closes it right after the alert.
fn assert_handshake_refused(err: &ClientError) {
    let refused_after_handshake = matches!(err, ClientError::Refused(m) if m.contains("requires client certificates"));
    assert!(matches!(err, ClientError::Tls { .. }) || refused_after_handshake, "{err}");
}

/// Runs a client that must fail, and returns why (bounded: a refusal must not hang).
async fn refused(options: strata_client::ClientOptions) -> ClientError {
    let run = strata_client::run(options, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(20), run).await.expect("a refused client gives up promptly") {
        Ok(outcome) => panic!("the client should have been refused, but it finished: {outcome:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_refuses_foreign_certificates_and_admits_a_certified_client_with_a_token() {
    let out = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (pki(1), pki(1));
    let token = strata_security::new_token();
    let tokens = out.path().join("tokens");
    write_tokens(&tokens, &[line_for(&token, "client-0")]);

    let mut options =
        strata_server::ServerOptions::new(synthetic_config(1, 2), out.path().join("run"), torch_backend());
    options.tls = Some(server_tls(&ours, true));
    options.tokens = Some(tokens);
    let (url, server, mut events) = start_tls_server(options).await;

    // A certificate from another CA, even with a valid token: refused in the handshake.
    let err = refused(client_options(&url, client_tls(&ours.ca, Some(&theirs.clients[0])), Some(&token))).await;
    assert_handshake_refused(&err);
    // No certificate at all.
    let err = refused(client_options(&url, client_tls(&ours.ca, None), Some(&token))).await;
    assert_handshake_refused(&err);
    // A client that does not trust the server's CA stops at once instead of retrying.
    let err = refused(client_options(&url, client_tls(&theirs.ca, Some(&ours.clients[0])), Some(&token))).await;
    assert!(matches!(&err, ClientError::Tls { reason, .. } if reason.contains("certificate")), "{err}");
    assert!(events.try_recv().is_err(), "no refused client got as far as Join");

    // The certified client with its token trains through both rounds.
    let mut good = client_options(&url, client_tls(&ours.ca, Some(&ours.clients[0])), Some(&token));
    good.connect_timeout = Duration::from_secs(30);
    let done = strata_client::run(good, std::future::pending()).await.expect("the certified client completes");
    assert_eq!(done.tasks_done, 3, "2 training rounds and the final evaluation");
    let outcome = server.await.expect("server task").expect("run completes");
    assert_eq!(outcome.ending, strata_server::Ending::Completed);
    assert_eq!(outcome.summary.rounds_completed, 2);
}

type Rpc = pb::federation_client::FederationClient<tonic::transport::Channel>;

/// A raw gRPC call with the given `authorization` value, if any.
fn with_auth<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_without_a_valid_token_are_unauthenticated_and_a_deleted_line_revokes_at_the_next_call() {
    let out = tempfile::tempdir().expect("tempdir");
    let pki = pki(0);
    let (alice, bob) = (strata_security::new_token(), strata_security::new_token());
    let tokens = out.path().join("tokens");
    write_tokens(&tokens, &["# lab clients".into(), line_for(&alice, "alice"), line_for(&bob, "bob")]);

    // TLS without client certificates: the tokens are what identifies clients.
    let mut options =
        strata_server::ServerOptions::new(synthetic_config(3, 1), out.path().join("run"), torch_backend());
    options.tls = Some(server_tls(&pki, false));
    options.tokens = Some(tokens.clone());
    let (url, server, _events) = start_tls_server(options).await;

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca.cert_pem));
    let channel = Endpoint::from_shared(url.clone()).expect("url").tls_config(tls).expect("tls").connect().await;
    let mut rpc = Rpc::new(channel.expect("TLS connection"));
    let join = |id: &str| pb::JoinRequest {
        client_id: id.into(),
        capabilities: None,
        requested_index: None,
        host_id: String::new(),
        session: String::new(),
    };
    let (alice_id, bob_id) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());

    let status = rpc.join(with_auth(join(&alice_id), None)).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
    let status = rpc.join(with_auth(join(&alice_id), Some("strata_wrong"))).await.expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("not in the server's tokens file"), "{}", status.message());

    let joined = rpc.join(with_auth(join(&alice_id), Some(&alice))).await.expect("alice joins").into_inner();
    let (run_id, alice_session) = (joined.run_id, joined.session);
    let poll = |id: &str, session: &str| pb::PullTaskRequest {
        run_id: run_id.clone(),
        client_id: id.into(),
        session: session.into(),
        wait_ms: 10,
        ..Default::default()
    };
    let task = rpc
        .pull_task(with_auth(poll(&alice_id, &alice_session), Some(&alice)))
        .await
        .expect("alice polls")
        .into_inner();
    assert_eq!(task.kind, pb::TaskKind::Wait as i32, "the run waits for 3 clients");

    // Revoke alice by deleting her line, while the server runs: her next call is refused.
    write_tokens(&tokens, &["# lab clients".into(), line_for(&bob, "bob")]);
    let status = rpc.pull_task(with_auth(poll(&alice_id, &alice_session), Some(&alice))).await.expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());
    let bob_session = rpc.join(with_auth(join(&bob_id), Some(&bob))).await.expect("bob is still accepted");
    let bob_session = bob_session.into_inner().session;
    rpc.pull_task(with_auth(poll(&bob_id, &bob_session), Some(&bob))).await.expect("bob polls");

    // The real client daemon, without a token and with the revoked one: refused, in words.
    let client_tls = client_tls(&pki.ca, None);
    let err = refused(client_options(&url, client_tls.clone(), None)).await;
    assert!(matches!(&err, ClientError::Refused(m) if m.contains("requires a client token")), "{err}");
    let err = refused(client_options(&url, client_tls, Some(&alice))).await;
    assert!(matches!(&err, ClientError::Refused(m) if m.contains("revoked")), "{err}");

    server.abort();
}

/// A raw join request of `id` with `session`, through `host` if given.
fn join_request(id: &str, session: &str, host: Option<&str>) -> pb::JoinRequest {
    pb::JoinRequest {
        client_id: id.into(),
        capabilities: None,
        requested_index: None,
        host_id: host.unwrap_or_default().into(),
        session: session.into(),
    }
}

/// Issue 14, "sessions bound to credentials": a slot is bound to the token (or else the client
/// certificate) it was joined with, one credential holds `--slots-per-credential` slots, and a
/// host's polls need one of its clients' sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_are_bound_to_credentials_and_host_polls_to_sessions() {
    let out = tempfile::tempdir().expect("tempdir");
    let pki = pki(2);
    let (alice, bob, hosts) =
        (strata_security::new_token(), strata_security::new_token(), strata_security::new_token());
    let tokens = out.path().join("tokens");
    write_tokens(&tokens, &[line_for(&alice, "alice"), line_for(&bob, "bob"), line_for(&hosts, "host")]);
    let mut options =
        strata_server::ServerOptions::new(synthetic_config(8, 1), out.path().join("run"), torch_backend());
    options.tls = Some(server_tls(&pki, false));
    options.tokens = Some(tokens);
    options.slots_per_credential = 2;
    let (url, server, _events) = start_tls_server(options).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca.cert_pem));
    let channel = Endpoint::from_shared(url.clone()).expect("url").tls_config(tls).expect("tls").connect().await;
    let mut rpc = Rpc::new(channel.expect("TLS connection"));
    let ids: Vec<String> = (0..6).map(|_| uuid::Uuid::new_v4().to_string()).collect();

    // Alice's token holds two slots, not three.
    let a0 = rpc.join(with_auth(join_request(&ids[0], "", None), Some(&alice))).await.expect("alice 1").into_inner();
    rpc.join(with_auth(join_request(&ids[1], "", None), Some(&alice))).await.expect("alice 2");
    let status = rpc.join(with_auth(join_request(&ids[2], "", None), Some(&alice))).await.expect_err("a third slot");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("--slots-per-credential"), "{}", status.message());
    // Bob, holding alice's client id and even its session, cannot take her slot.
    let status =
        rpc.join(with_auth(join_request(&ids[0], &a0.session, None), Some(&bob))).await.expect_err("another token");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("another credential"), "{}", status.message());
    // Alice rejoins her slot with her session.
    let again = rpc.join(with_auth(join_request(&ids[0], &a0.session, None), Some(&alice))).await.expect("rejoin");
    assert_eq!(again.into_inner().client_index, a0.client_index);

    // A host of two virtual clients; bob's client joined on its own.
    let host = uuid::Uuid::new_v4().to_string();
    let h0 = rpc.join(with_auth(join_request(&ids[3], "", Some(&host)), Some(&hosts))).await.expect("virtual 1");
    let h0 = h0.into_inner();
    rpc.join(with_auth(join_request(&ids[4], "", Some(&host)), Some(&hosts))).await.expect("virtual 2");
    let b = rpc.join(with_auth(join_request(&ids[5], "", None), Some(&bob))).await.expect("bob").into_inner();
    let poll = |client: &str, session: &str| pb::HostPollRequest {
        run_id: h0.run_id.clone(),
        host_id: host.clone(),
        wait_ms: 10,
        max_tasks: 10,
        client_id: client.into(),
        session: session.into(),
    };
    // Knowing the host's id is not enough to take its tasks.
    let status = rpc.pull_host_tasks(with_auth(poll(&ids[3], ""), Some(&bob))).await.expect_err("no session");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = rpc.pull_host_tasks(with_auth(poll(&ids[5], &b.session), Some(&bob))).await.expect_err("not its host");
    assert!(status.message().contains("did not join through host"), "{}", status.message());
    rpc.pull_host_tasks(with_auth(poll(&ids[3], &h0.session), Some(&hosts))).await.expect("the host polls");
    server.abort();
}

/// Without tokens, a client certificate is the credential: one certificate, one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_certificate_holds_one_slot() {
    let out = tempfile::tempdir().expect("tempdir");
    let pki = pki(2);
    let mut options =
        strata_server::ServerOptions::new(synthetic_config(4, 1), out.path().join("run"), torch_backend());
    options.tls = Some(server_tls(&pki, true));
    let (url, server, _events) = start_tls_server(options).await;
    let endpoint = |identity: &CertAndKey| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca.cert_pem))
            .identity(tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        Endpoint::from_shared(url.clone()).expect("url").tls_config(tls).expect("tls")
    };
    let mut first = Rpc::new(endpoint(&pki.clients[0]).connect().await.expect("mTLS connection"));
    let mut second = Rpc::new(endpoint(&pki.clients[1]).connect().await.expect("mTLS connection"));
    let id = || uuid::Uuid::new_v4().to_string();
    first.join(join_request(&id(), "", None)).await.expect("the first slot");
    let status = first.join(join_request(&id(), "", None)).await.expect_err("a second slot");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("--slots-per-credential"), "{}", status.message());
    second.join(join_request(&id(), "", None)).await.expect("another certificate's slot");
    server.abort();
}
