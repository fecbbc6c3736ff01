//! TLS to the broker, against a real Mosquitto with a TLS listener that
//! requires a client certificate, takes its CN as the user name, and an ACL
//! under which the gateway may publish only its own topics and read only
//! its own commands. The certificates are made here (rcgen): a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate whose CN is
//! the gateway id. The MES (the recorder) reads on a plaintext listener.
//!
//! Proven: records reach the MES over mutual TLS and nothing readable
//! crosses the wire (a relay sees no MQTT CONNECT, no password, no record);
//! a broker the gateway cannot trust (unknown CA, expired certificate,
//! another name) and a client certificate the broker refuses are named in
//! the log, retried, and the gateway connects once its config is fixed; a
//! failed handshake is named in the status once a broker is reached.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use linegate::devices::pty::VirtualSerial;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FILTER: &str = "plant1/line3/#";
const STATUS_TOPIC: &str = "plant1/line3/gateway/gw-test/status";
const PASSWORD: &str = "pw-never-in-clear-4711";

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A certificate for `names` (DNS names or IP addresses) with common
    /// name `cn`, signed by this CA: (certificate PEM, key PEM).
    fn issue(&self, cn: &str, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Write `text` to `dir/name`, readable by its owner only.
fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Write `text` to `dir/name`, readable by everyone: Mosquitto started by
/// root reads its files after switching to its own user.
fn write_public(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// A Mosquitto with a plaintext listener (the MES) and a TLS listener on
/// `tls_port` presenting `server` (cert, key), trusting client certificates
/// of `ca`, with the gateway's ACL. Its files are in `dir`, which it must
/// be able to read (see [`broker_dir`]).
fn tls_broker(dir: &Path, tls_port: u16, ca: &Ca, server: &(String, String)) -> Mosquitto {
    let ca_file = write_public(dir, "broker-ca.pem", &ca.0.pem());
    let cert = write_public(dir, "server.pem", &server.0);
    let key = write_public(dir, "server.key", &server.1);
    // Anonymous clients (the MES on the plaintext listener) read and write
    // everything; a gateway, known by its certificate's CN, publishes only
    // under its station and gateway topics and reads only its commands.
    let acl = write_public(
        dir,
        "acl",
        "topic readwrite #\n\
         pattern write plant1/line3/st10/#\n\
         pattern write plant1/line3/gateway/%u/#\n\
         pattern read plant1/line3/gateway/%u/cmd/#\n",
    );
    Mosquitto::start_with(
        free_port(),
        &format!(
            "acl_file {acl}\nlistener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nuse_identity_as_username true\n",
            acl = acl.display(),
            ca = ca_file.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
}

/// A directory for a broker's files that its user can enter.
fn broker_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The gateway's config: the test config with the broker on `port` and
/// `[mqtt.tls]` trusting `ca_file`, presenting the client certificate, a
/// user name and password (ignored by this broker, and never in clear).
fn gateway_toml(
    dir: &Path,
    pty: &VirtualSerial,
    port: u16,
    ca_file: &Path,
    client: (&Path, &Path),
) -> String {
    let password = write_private(dir, "mqtt.pass", PASSWORD);
    let mut toml = config_toml(&dir.join("data"), port, pty.slave_path()).replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\nusername = \"gw-test\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    toml.push_str(&format!(
        "\n[mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca_file.display(),
        client.0.display(),
        client.1.display()
    ));
    toml
}

/// A TCP relay from a free port to 127.0.0.1:`upstream` that keeps every
/// byte the gateway sent.
async fn recording_relay(upstream: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let to_broker = async {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = dr.read(&mut buf).await {
                        if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                };
                let to_gateway = tokio::io::copy(&mut ur, &mut dw);
                tokio::select! {
                    _ = to_broker => {}
                    _ = to_gateway => {}
                }
            });
        }
    });
    (port, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_mes_over_mutual_tls_and_nothing_crosses_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = broker_dir();
    let ca = Ca::new("plant CA");
    let tls_port = free_port();
    let broker = tls_broker(
        broker_dir.path(),
        tls_port,
        &ca,
        &ca.issue("broker", &["127.0.0.1", "localhost"], false),
    );
    let (relay, seen) = recording_relay(tls_port).await;
    let rec = Recorder::start(broker.port, FILTER).await;
    let client = ca.issue("gw-test", &[], false);
    let ca_file = write_private(dir.path(), "ca.pem", &ca.0.pem());
    let cert = write_private(dir.path(), "client.pem", &client.0);
    let key = write_private(dir.path(), "client.key", &client.1);
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &gateway_toml(dir.path(), &pty, relay, &ca_file, (&cert, &key)),
    );
    assert!(
        gw.wait_log("MQTT connected", WAIT).await,
        "no TLS connection"
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;
    pty.write(b"SECRET-PART-0001\r\n").await.unwrap();
    rec.wait_for("the scan", |m| {
        m.iter()
            .any(|m| m.json()["data"]["code"] == "SECRET-PART-0001")
    })
    .await;
    // The status says the link is TLS, and to which broker.
    rec.wait_for("a TLS status", |m| {
        m.iter().any(|m| {
            m.topic == STATUS_TOPIC
                && m.json()["broker"]["tls"] == true
                && m.json()["broker"]["address"] == format!("127.0.0.1:{relay}")
        })
    })
    .await;
    // The broker refused nothing: the ACL lets the gateway publish its own topics.
    assert!(
        !gw.log_text().contains("broker refused"),
        "{}",
        gw.log_text()
    );
    let wire = seen.lock().unwrap().clone();
    assert!(
        wire.len() > 1000,
        "the relay saw the traffic ({} bytes)",
        wire.len()
    );
    assert_eq!(wire[0], 0x16, "the first byte is a TLS handshake record");
    for clear in [
        &b"MQTT"[..],
        PASSWORD.as_bytes(),
        b"SECRET-PART-0001",
        b"st10/scan",
    ] {
        assert!(
            !contains(&wire, clear),
            "{:?} crossed the wire in clear",
            String::from_utf8_lossy(clear)
        );
    }
}

/// A gateway whose `[mqtt.tls]` trusts `trusted` (and presents a
/// certificate of `client_ca`) against a broker presenting `server`; the
/// failure is named in the log as `kind`, retried; the gateway connects
/// once restarted with the right CA and a certificate the broker takes.
async fn refused_then_fixed(server: fn(&Ca) -> (String, String), wrong: Wrong, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = broker_dir();
    let ca = Ca::new("plant CA");
    let other = Ca::new("someone else's CA");
    let tls_port = free_port();
    let _broker = tls_broker(broker_dir.path(), tls_port, &ca, &server(&ca));
    let (trusted, client_ca) = match wrong {
        Wrong::Ca => (&other, &ca),
        Wrong::ClientCert => (&ca, &other),
        Wrong::Server => (&ca, &ca),
    };
    let client = client_ca.issue("gw-test", &[], false);
    let ca_file = write_private(dir.path(), "ca.pem", &trusted.0.pem());
    let cert = write_private(dir.path(), "client.pem", &client.0);
    let key = write_private(dir.path(), "client.key", &client.1);
    let pty = VirtualSerial::open().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &gateway_toml(dir.path(), &pty, tls_port, &ca_file, (&cert, &key)),
    );
    let named = format!("kind=\"{kind}\"");
    // Named, and retried: several attempts, each named.
    assert!(
        gw.wait_log_count(&named, 3, WAIT).await,
        "three failures named {kind}:\n{}",
        gw.log_text()
    );
    assert!(!gw.log_text().contains("MQTT connected"));
    gw.stop();
    if matches!(wrong, Wrong::Server) {
        // Only the broker can fix its certificate.
        return;
    }
    // Fixed: the right CA, a certificate the broker takes.
    let good = ca.issue("gw-test", &[], false);
    write_private(dir.path(), "ca.pem", &ca.0.pem());
    write_private(dir.path(), "client.pem", &good.0);
    write_private(dir.path(), "client.key", &good.1);
    gw.spawn();
    assert!(
        gw.wait_log("MQTT connected", WAIT).await,
        "connects once fixed:\n{}",
        gw.log_text()
    );
}

#[derive(Clone, Copy)]
enum Wrong {
    /// The gateway trusts another CA than the broker's.
    Ca,
    /// The broker's certificate is at fault (expired, another name).
    Server,
    /// The client certificate comes from a CA the broker does not trust.
    ClientCert,
}

fn good_server(ca: &Ca) -> (String, String) {
    ca.issue("broker", &["127.0.0.1", "localhost"], false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_named_retried_and_connects_once_fixed() {
    refused_then_fixed(good_server, Wrong::Ca, "unknown-ca").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_broker_certificate_is_named() {
    refused_then_fixed(
        |ca| ca.issue("broker", &["127.0.0.1", "localhost"], true),
        Wrong::Server,
        "expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_is_named() {
    refused_then_fixed(
        |ca| ca.issue("broker", &["broker.elsewhere.example"], false),
        Wrong::Server,
        "name-mismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_broker_refuses_is_named() {
    refused_then_fixed(good_server, Wrong::ClientCert, "bad-client-cert").await;
}

/// `server_name`: the broker reached by IP address, its certificate issued
/// for a DNS name only, is accepted when the config names it. (Its key file
/// here is readable by every user: a warning at start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_checks_the_certificate_against_the_configured_name() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = broker_dir();
    let ca = Ca::new("plant CA");
    let tls_port = free_port();
    let _broker = tls_broker(
        broker_dir.path(),
        tls_port,
        &ca,
        &ca.issue("broker", &["mqtt.plant.example"], false),
    );
    let client = ca.issue("gw-test", &[], false);
    let ca_file = write_private(dir.path(), "ca.pem", &ca.0.pem());
    let cert = write_private(dir.path(), "client.pem", &client.0);
    let key = write_public(dir.path(), "client.key", &client.1);
    let pty = VirtualSerial::open().unwrap();
    let mut toml = gateway_toml(dir.path(), &pty, tls_port, &ca_file, (&cert, &key));
    toml.push_str("server_name = \"mqtt.plant.example\"\n");
    let gw = Gateway::start(dir.path(), &toml);
    assert!(
        gw.wait_log("MQTT connected", WAIT).await,
        "{}",
        gw.log_text()
    );
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("mqtt.tls.key_file:") && l.contains("0644")),
        "{log}"
    );
}

/// `linegate check` with `[mqtt.tls]`: credentials named `cred:NAME` are
/// read from `$CREDENTIALS_DIRECTORY`; a key file others can read gets a
/// warning; a key that is not the certificate's is exit 64, naming the key
/// and both files.
#[test]
fn check_reads_credentials_warns_about_exposed_keys_and_refuses_a_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let ca = Ca::new("plant CA");
    let client = ca.issue("gw-test", &[], false);
    let other = ca.issue("gw-other", &[], false);
    write_private(creds.path(), "ca", &ca.0.pem());
    write_private(creds.path(), "client-cert", &client.0);
    write_private(creds.path(), "client-key", &client.1);
    write_private(creds.path(), "other-key", &other.1);
    write_private(creds.path(), "mqtt-pass", PASSWORD);
    let config = dir.path().join("linegate.toml");
    let check = |key: &str| {
        let toml = config_toml(&dir.path().join("data"), 8883, Path::new("/dev/null")).replace(
            "[mqtt]\n",
            "[mqtt]\nusername = \"gw-test\"\npassword_file = \"cred:mqtt-pass\"\n",
        ) + &format!(
            "\n[mqtt.tls]\nca_file = \"cred:ca\"\ncert_file = \"cred:client-cert\"\nkey_file = \"{key}\"\n"
        );
        std::fs::write(&config, toml).unwrap();
        std::process::Command::new(BIN)
            .arg("check")
            .arg(&config)
            .env("CREDENTIALS_DIRECTORY", creds.path())
            .output()
            .unwrap()
    };
    let ok = check("cred:client-key");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("tls:      on"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // Readable by every user: a warning, still valid.
    let exposed = write_public(dir.path(), "client.key", &client.1);
    let warned = check(&exposed.display().to_string());
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: mqtt.tls.key_file:") && stderr.contains("client.key"),
        "{stderr}"
    );

    let refused = check("cred:other-key");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    for part in [
        "mqtt.tls.key_file",
        "other-key",
        "client-cert",
        "does not belong",
    ] {
        assert!(stderr.contains(part), "{part} missing: {stderr}");
    }
}

/// Two brokers, the first with an expired certificate: the gateway moves to
/// the second, and its status there names the first one's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_is_named_in_the_status_and_the_next_broker_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (broker_dir(), broker_dir());
    let ca = Ca::new("plant CA");
    let (port_a, port_b) = (free_port(), free_port());
    let _a = tls_broker(
        dir_a.path(),
        port_a,
        &ca,
        &ca.issue("broker-a", &["127.0.0.1"], true),
    );
    let b = tls_broker(dir_b.path(), port_b, &ca, &good_server(&ca));
    let rec = Recorder::start(b.port, FILTER).await;
    let client = ca.issue("gw-test", &[], false);
    let ca_file = write_private(dir.path(), "ca.pem", &ca.0.pem());
    let cert = write_private(dir.path(), "client.pem", &client.0);
    let key = write_private(dir.path(), "client.key", &client.1);
    let pty = VirtualSerial::open().unwrap();
    let toml = gateway_toml(dir.path(), &pty, port_a, &ca_file, (&cert, &key)).replace(
        &format!("host = \"127.0.0.1\"\nport = {port_a}\n"),
        &format!("brokers = [\"127.0.0.1:{port_a}\", \"127.0.0.1:{port_b}\"]\n"),
    );
    let _gw = Gateway::start(dir.path(), &toml);
    rec.wait_for(
        "a status naming the first broker's expired certificate",
        |m| {
            m.iter().any(|m| {
                let s = m.json();
                m.topic == STATUS_TOPIC
                    && s["broker"]["address"] == format!("127.0.0.1:{port_b}")
                    && s["broker"]["last_error"]["kind"] == "expired"
                    && s["broker"]["last_error"]["broker"] == format!("127.0.0.1:{port_a}")
            })
        },
    )
    .await;
}
