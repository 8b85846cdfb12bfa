//! TLS on the TCP listeners (issue 7), with certificates made at test time:
//! a TLS client takes a lock; a plain client against the TLS port fails
//! without hurting the server; client-certificate mode refuses a client
//! without a certificate and serves one signed by the CA.

mod common;

use common::{TempDir, TestServer};
use lockd::client::tls::{connect_tls, TlsClientConfig, TlsClientStream};
use lockd::transport::tls::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, all signed by the CA, written as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("tls");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        std::fs::write(dir.path.join("ca.pem"), ca.pem()).expect("write");
        for (name, sans, usage) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["client.example".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let mut params = CertificateParams::new(sans).expect("params");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("sign");
            std::fs::write(dir.path.join(format!("{name}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.path.join(format!("{name}.key")), key.serialize_pem())
                .expect("write");
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path.join(file)
    }

    fn server_config(&self, client_ca: bool) -> TlsConfig {
        let ca = self.path("ca.pem");
        TlsConfig::from_pem_files(
            &self.path("server.pem"),
            &self.path("server.key"),
            client_ca.then_some(ca.as_path()),
        )
        .expect("server tls config")
    }

    fn client_config(&self) -> TlsClientConfig {
        TlsClientConfig::new(Some(&self.path("ca.pem"))).expect("client tls config")
    }
}

fn tls_server(pki: &Pki, client_ca: bool) -> TestServer {
    let tls = pki.server_config(client_ca);
    TestServer::with_config(|c| c.tls = Some(tls))
}

fn cmd(stream: &mut BufReader<TlsClientStream>, command: &str) -> std::io::Result<String> {
    stream
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())?;
    stream.get_mut().flush()?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    Ok(line)
}

/// Polls `q` over the (plain) Unix socket until no lock is held.
fn wait_for_no_locks(server: &TestServer) {
    server.connect_unix().wait_for_stat("locks", 0);
}

#[test]
fn a_tls_client_takes_a_lock() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let port = server.addr.port();
    for host in ["127.0.0.1", "localhost"] {
        let stream = connect_tls(host, port, &pki.client_config(), TIMEOUT).expect("connect");
        let name = stream.sock.local_addr().expect("addr").to_string();
        let mut stream = BufReader::new(stream);
        assert_eq!(
            cmd(&mut stream, &format!("g {host}")).expect("g"),
            format!("1 Lock Get Success: {host}\n")
        );
        assert_eq!(
            cmd(&mut stream, "me").expect("me"),
            format!("1 {name} {name}\n")
        );
        // Pipelined commands come back in order.
        stream
            .get_mut()
            .write_all(b"i a\ng a\ni a\n")
            .expect("write");
        stream.get_mut().flush().expect("flush");
        let mut three = String::new();
        for _ in 0..3 {
            stream.read_line(&mut three).expect("read");
        }
        assert_eq!(
            three,
            "0 Lock Not Locked: a\n1 Lock Get Success: a\n1 Lock Is Locked: a\n"
        );
        drop(stream);
        // Closing without close_notify still orphans the locks.
        wait_for_no_locks(&server);
    }
    // Unix sockets stay plain.
    assert_eq!(server.connect_unix().cmd("ping"), "1 pong\n");
}

#[test]
fn a_plain_client_on_the_tls_port_fails_cleanly() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let mut plain = TcpStream::connect(server.addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain.write_all(b"g foo\n").expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    // A TLS alert record (content type 21) at most, then the close.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    // The server lives on, and nobody holds foo.
    let mut tls = BufReader::new(
        connect_tls(
            "127.0.0.1",
            server.addr.port(),
            &pki.client_config(),
            TIMEOUT,
        )
        .expect("connect"),
    );
    assert_eq!(
        cmd(&mut tls, "g foo").expect("g"),
        "1 Lock Get Success: foo\n"
    );
    // A client that connects and says nothing holds only its own thread.
    let _silent = TcpStream::connect(server.addr).expect("connect");
    assert_eq!(cmd(&mut tls, "ping").expect("ping"), "1 pong\n");
}

#[test]
fn a_client_certificate_is_required_when_configured() {
    let pki = Pki::new();
    let server = tls_server(&pki, true);
    let port = server.addr.port();

    // Without a certificate: refused (in TLS 1.3 the client learns it at
    // its first read).
    let refused = connect_tls("127.0.0.1", port, &pki.client_config(), TIMEOUT)
        .map_err(|e| e.to_string())
        .and_then(|s| cmd(&mut BufReader::new(s), "g foo").map_err(|e| e.to_string()));
    match refused {
        Err(e) => assert!(e.contains("Certificate"), "{e}"),
        Ok(reply) => assert!(reply.is_empty(), "served without a certificate: {reply}"),
    }

    // With one signed by the CA: served.
    let config = pki
        .client_config()
        .with_client_cert(&pki.path("client.pem"), &pki.path("client.key"))
        .expect("client cert");
    let mut stream =
        BufReader::new(connect_tls("127.0.0.1", port, &config, TIMEOUT).expect("connect"));
    assert_eq!(
        cmd(&mut stream, "g foo").expect("g"),
        "1 Lock Get Success: foo\n"
    );
}

#[test]
fn a_server_we_do_not_trust_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = tls_server(&pki, false);
    let err = connect_tls(
        "127.0.0.1",
        server.addr.port(),
        &other.client_config(),
        TIMEOUT,
    )
    .expect_err("untrusted certificate");
    assert!(err.to_string().contains("handshake"), "{err}");
}

#[test]
fn bad_files_say_which() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let err = TlsConfig::from_pem_files(&missing, &pki.path("server.key"), None)
        .expect_err("missing cert");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    // A certificate where the key should be.
    let err = TlsConfig::from_pem_files(&pki.path("server.pem"), &pki.path("server.pem"), None)
        .expect_err("no key");
    assert!(err.to_string().contains("--tls-key"), "{err}");
    // A key that belongs to another certificate.
    let err = TlsConfig::from_pem_files(&pki.path("server.pem"), &pki.path("client.key"), None)
        .expect_err("mismatched key");
    assert!(err.to_string().contains("does the key belong"), "{err}");
    let err = TlsConfig::from_pem_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("server.key")),
    )
    .expect_err("a key is no CA");
    assert!(err.to_string().contains("--tls-client-ca"), "{err}");
}

#[test]
fn the_daemon_refuses_unusable_tls_files_with_status_2() {
    let pki = Pki::new();
    let lockd = env!("CARGO_BIN_EXE_lockd");
    for (cert, key) in [("missing.pem", "server.key"), ("server.pem", "client.key")] {
        let out = std::process::Command::new(lockd)
            .args(["--listen", "127.0.0.1:0", "--no-state", "--tls-cert"])
            .arg(pki.path(cert))
            .arg("--tls-key")
            .arg(pki.path(key))
            .output()
            .expect("run lockd");
        assert_eq!(out.status.code(), Some(2), "{cert} {key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("lockd: ")
                && stderr.contains("--tls-")
                && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
}

/// `lockd::Client` connects with `tls://HOST:PORT` and a CA option: protocol
/// 2, a fencing token, a guard that releases on drop, and the disconnect
/// signal when the server goes away (issue 7).
#[test]
fn the_client_library_speaks_tls() {
    let pki = Pki::new();
    let mut server = tls_server(&pki, false);
    let addr = format!("tls://localhost:{}", server.addr.port());
    let config = lockd::ClientConfig::new().tls_ca(pki.path("ca.pem"));
    let client = lockd::Client::connect_with(&addr, config.clone()).expect("connect over TLS");
    assert_eq!(client.protocol(), 2);
    let guard = client
        .try_lock_for("tls-lock", Duration::from_secs(1))
        .expect("lock")
        .expect("a free lock");
    assert!(guard.token().is_some_and(|t| t > 0));
    let other = lockd::Client::connect_with(&addr, config).expect("second client");
    assert!(other.is_locked("tls-lock").expect("i"));
    drop(guard);
    other.stats().expect("q");
    assert!(!other.is_locked("tls-lock").expect("i"));
    // Without the CA the server's certificate is not trusted.
    let untrusted = lockd::Client::connect(&addr);
    assert!(untrusted.is_err(), "{untrusted:?}");
    let lost = client.on_disconnect();
    server.stop(lockd::Shutdown::Immediate);
    lost.recv_timeout(Duration::from_secs(10))
        .expect("the disconnect is signalled");
    assert!(client.ping().expect_err("gone").is_disconnected());
}

/// With `--tls-client-ca`, the client library presents its certificate.
#[test]
fn the_client_library_presents_a_client_certificate() {
    let pki = Pki::new();
    let server = tls_server(&pki, true);
    let addr = format!("tls://127.0.0.1:{}", server.addr.port());
    let config = lockd::ClientConfig::new().tls_ca(pki.path("ca.pem"));
    let without = lockd::Client::connect_with(&addr, config.clone());
    assert!(without.is_err(), "no client certificate: {without:?}");
    let with = lockd::Client::connect_with(
        &addr,
        config.tls_client_cert(pki.path("client.pem"), pki.path("client.key")),
    )
    .expect("with a client certificate");
    let _lock = with.lock("mutual").expect("lock");
}

/// `lockctl` connects with `-s tls://HOST:PORT --tls-ca PATH`: `run` gets
/// a fencing token, `shell` talks to the server (issue 7).
#[test]
fn lockctl_speaks_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let addr = format!("tls://localhost:{}", server.addr.port());
    let ca = pki.path("ca.pem");
    let lockctl = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"));
        command.args(["-S", &addr, "--tls-ca"]).arg(&ca);
        command
    };
    let run = lockctl()
        .args([
            "run",
            "-n",
            "tls-job",
            "--",
            "sh",
            "-c",
            "echo token=$LOCKD_TOKEN",
        ])
        .output()
        .expect("lockctl run");
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let out = String::from_utf8_lossy(&run.stdout);
    let token: u64 = out
        .trim()
        .strip_prefix("token=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {out:?}"));
    assert!(token > 0);
    let mut shell = lockctl()
        .arg("shell")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("lockctl shell");
    shell
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"ping\ng over-tls\n")
        .expect("write");
    let shell = shell.wait_with_output().expect("shell output");
    assert_eq!(shell.status.code(), Some(0), "{shell:?}");
    assert_eq!(
        String::from_utf8_lossy(&shell.stdout),
        "1 pong\n1 Lock Get Success: over-tls\n"
    );
    // Without the CA option the server is not trusted: exit 69.
    let untrusted = std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(["-S", &addr, "ping"])
        .output()
        .expect("lockctl ping");
    assert_eq!(untrusted.status.code(), Some(69), "{untrusted:?}");
}

/// `watch` over TLS (issue 11): the snapshot, and events as they happen,
/// also a second `watch` sent in the same TLS record as the first.
#[test]
fn a_tls_client_watches_locks() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let stream = connect_tls(
        "127.0.0.1",
        server.addr.port(),
        &pki.client_config(),
        TIMEOUT,
    )
    .expect("connect");
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"watch a\nwatch b\n")
        .expect("write");
    stream.get_mut().flush().expect("flush");
    let mut lines = String::new();
    for _ in 0..4 {
        stream.read_line(&mut lines).expect("read");
    }
    assert_eq!(lines, "1 Watching: a\nsynced\n1 Watching: b\nsynced\n");
    let mut other = server.connect_unix();
    let me = other.cmd("me");
    let unix = me.split(' ').nth(1).expect("1 DEFAULT NAME");
    assert_eq!(other.cmd("sg b"), "1 Shared Lock Get Success: b\n");
    let mut event = String::new();
    stream.read_line(&mut event).expect("read");
    assert_eq!(event, format!("locked s 1 {unix} b\n"));
}

/// `lockctl` speaking plain text to the TLS port, or TLS to a plain port,
/// says which address to use instead (issue 11).
#[test]
fn lockctl_names_the_address_when_tls_does_not_match() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let port = server.addr.port();
    let lockctl = |addr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"))
            .args(["-S", addr, "--io-timeout", "2s", "--tls-ca"])
            .arg(pki.path("ca.pem"))
            .arg("ping")
            .env_remove("LOCKD_SERVER")
            .output()
            .expect("lockctl ping")
    };
    let plain = lockctl(&format!("127.0.0.1:{port}"));
    assert_eq!(plain.status.code(), Some(69), "{plain:?}");
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(
        said.contains(&format!("this port speaks TLS: use tls://127.0.0.1:{port}")),
        "{said}"
    );
    // The shell, on its raw connection, says the same.
    let shell = std::process::Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(["-S", &format!("127.0.0.1:{port}"), "shell"])
        .env_remove("LOCKD_SERVER")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("lockctl shell");
    assert_eq!(shell.status.code(), Some(69), "{shell:?}");
    assert!(
        String::from_utf8_lossy(&shell.stderr).contains("this port speaks TLS: use tls://"),
        "{shell:?}"
    );
    let plain_server = TestServer::start();
    let tls = lockctl(&format!("tls://localhost:{}", plain_server.addr.port()));
    assert_eq!(tls.status.code(), Some(69), "{tls:?}");
    let said = String::from_utf8_lossy(&tls.stderr);
    assert!(
        said.contains(&format!("use localhost:{}", plain_server.addr.port())),
        "{said}"
    );
}
