//! Validation of the files that hold secrets and TLS material
//! (`mqtt.password_file`, `[mqtt.tls]`): where they are (a path, or
//! `cred:NAME` for a systemd credential), reading them bounded, warning
//! when a key or password file is readable by others, and building the TLS
//! client config so `linegate check` catches an unusable certificate or a
//! key that does not belong to it.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::super::files::read_bounded;
use super::super::model::{Secret, TlsConfig};
use super::super::raw::TlsRaw;
use super::{Result, Validator};
use crate::uplink::tls;

/// The prefix of a value naming a systemd credential.
const CRED: &str = "cred:";
/// The environment variable systemd sets to the credentials' directory.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

impl Validator<'_> {
    /// The path of a secret or TLS file: `cred:NAME` is the credential
    /// `NAME` in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`),
    /// anything else a path as for every other file key.
    fn secret_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf> {
        let Some(name) = v.get_ref().strip_prefix(CRED) else {
            return self.path(v, key);
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(self.err(
                v.span(),
                key,
                format!("\"{CRED}{name}\" does not name a credential: write cred: and the credential's name, such as \"cred:mqtt-key\""),
            ));
        }
        match &self.credentials {
            Some(dir) => Ok(dir.join(name)),
            None => Err(self.err_plain(
                v.span(),
                key,
                format!(
                    "\"{CRED}{name}\" is a systemd credential, but ${CREDENTIALS_DIRECTORY} is not set: \
                     run the gateway from a unit with LoadCredential={name}:/path/to/file, or give a path"
                ),
            )),
        }
    }

    /// Reads the file a secret or TLS key names, at most `limit` bytes.
    /// `what` says what it should hold, for messages. A private file
    /// (`private`: a key or a password) readable by others gets a warning.
    pub(super) fn secret_file(
        &self,
        v: &Spanned<String>,
        key: &str,
        what: &str,
        limit: u64,
        private: bool,
    ) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.secret_path(v, key)?;
        let bytes = read_bounded(&path, limit).map_err(|e| {
            self.err_plain(
                v.span(),
                key,
                format!("cannot read {what} {}: {e}", path.display()),
            )
        })?;
        if private && let Some(warning) = exposed(&path, key) {
            self.warnings.borrow_mut().push(warning);
        }
        Ok((path, bytes))
    }

    /// Reads a password file: trailing newline trimmed, must not be empty.
    pub(super) fn secret(&self, v: &Spanned<String>, key: &str) -> Result<Secret> {
        let (path, bytes) = self.secret_file(
            v,
            key,
            "password file",
            super::super::MAX_SECRET_BYTES,
            true,
        )?;
        let text = String::from_utf8(bytes).map_err(|_| {
            self.err_plain(
                v.span(),
                key,
                format!(
                    "cannot read password file {}: it is not UTF-8 text",
                    path.display()
                ),
            )
        })?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(self.err_plain(
                v.span(),
                key,
                format!("password file {} is empty", path.display()),
            ));
        }
        Ok(Secret(secret.to_owned()))
    }

    /// `[mqtt.tls]`: the trust anchors (`ca_file`, else the system's), the
    /// client certificate and key (both or neither), the server name.
    pub(super) fn tls(&self, raw: &Spanned<TlsRaw>) -> Result<TlsConfig> {
        let t = raw.get_ref();
        match (&t.cert_file, &t.key_file) {
            (Some(_), None) => {
                return Err(self.err_plain(
                    raw.span(),
                    "mqtt.tls.key_file",
                    "cert_file is set but key_file is not: a client certificate needs its private key (give both or neither)",
                ));
            }
            (None, Some(k)) => {
                return Err(self.err_plain(
                    k.span(),
                    "mqtt.tls.cert_file",
                    "key_file is set but cert_file is not: a private key needs its client certificate (give both or neither)",
                ));
            }
            _ => {}
        }
        let pem_error = |v: &Spanned<String>, key: &str, path: &Path, why: String| {
            self.err_plain(v.span(), key, format!("{}: {why}", path.display()))
        };
        let (ca_file, roots) = match &t.ca_file {
            Some(v) => {
                let key = "mqtt.tls.ca_file";
                let (path, bytes) = self.secret_file(v, key, "CA file", MAX_PEM_BYTES, false)?;
                let roots = tls::parse_certs(&bytes)
                    .and_then(tls::roots_from)
                    .map_err(|why| pem_error(v, key, &path, why))?;
                (Some(path), roots)
            }
            None => {
                let roots = tls::system_roots()
                    .map_err(|why| self.err_plain(raw.span(), "mqtt.tls.ca_file", why))?;
                (None, roots)
            }
        };
        // The key's value, its path and the certificate's path, for a
        // message about the pair.
        let mut pair = None;
        let identity = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => {
                let (cert_path, bytes) = self.secret_file(
                    c,
                    "mqtt.tls.cert_file",
                    "certificate file",
                    MAX_PEM_BYTES,
                    false,
                )?;
                let chain = tls::parse_certs(&bytes)
                    .map_err(|why| pem_error(c, "mqtt.tls.cert_file", &cert_path, why))?;
                let (key_path, bytes) =
                    self.secret_file(k, "mqtt.tls.key_file", "key file", MAX_PEM_BYTES, true)?;
                let key = tls::parse_key(&bytes)
                    .map_err(|why| pem_error(k, "mqtt.tls.key_file", &key_path, why))?;
                pair = Some((k, key_path, cert_path));
                Some(tls::ClientIdentity { chain, key })
            }
            _ => None,
        };
        let server_name = t
            .server_name
            .as_ref()
            .map(|s| self.non_empty(s, "mqtt.tls.server_name"))
            .transpose()?;
        let client =
            tls::client_config(roots, identity, server_name.as_deref()).map_err(|e| {
                match (&e, &pair) {
                    (tls::BuildError::ServerName(_), _) => self.err(
                        t.server_name.as_ref().map_or(raw.span(), Spanned::span),
                        "mqtt.tls.server_name",
                        e.to_string(),
                    ),
                    (
                        tls::BuildError::KeyMismatch | tls::BuildError::Identity(_),
                        Some((k, key_path, cert_path)),
                    ) => self.err_plain(
                        k.span(),
                        "mqtt.tls.key_file",
                        format!("{} and {}: {e}", key_path.display(), cert_path.display()),
                    ),
                    _ => self.err_plain(raw.span(), "mqtt.tls", e.to_string()),
                }
            })?;
        Ok(TlsConfig {
            client,
            ca_file,
            cert_file: pair.map(|(_, _, cert_path)| cert_path),
            server_name,
        })
    }
}

/// A warning when the private file at `path` can be read by others than
/// its owner and the gateway's own group (a file shared with the service's
/// group, root:linegate 0640, is the usual way to hand it a secret).
fn exposed(path: &Path, key: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    let others = mode & 0o004 != 0;
    let group = mode & 0o040 != 0 && meta.gid() != nix::unistd::getegid().as_raw();
    (others || group).then(|| {
        format!(
            "{key}: {} is readable by {} (mode {mode:04o}): make it readable by the gateway alone (chmod 600, or 640 with the gateway's group)",
            path.display(),
            if others { "every user" } else { "its group" }
        )
    })
}
