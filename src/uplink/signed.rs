//! Signed MES commands: the envelope, its Ed25519 signature, and the checks
//! that bind a signed command to this gateway, its topic and its time.
//!
//! A signed command is the JSON envelope
//! `{"signed":"<base64 of the inner JSON bytes>","sig":"<base64 signature>"}`.
//! The signature covers the inner bytes exactly as sent, so no JSON
//! canonicalisation is needed: the gateway verifies the bytes, then parses
//! them. The inner JSON is the command's usual payload plus three fields
//! that the signature binds to it: `gateway` (this gateway's id), `command`
//! (the name in the topic) and `ts` (milliseconds since the Unix epoch,
//! within `[commands] replay_window` of the gateway's clock). The command
//! `id` inside makes a replay recognisable: the stations remember the ids of
//! signed commands for the window (`station::Stations`).
//!
//! The MES's public key is read from `[commands] public_key_file`: the PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo) that `openssl pkey -pubout` writes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier { id-Ed25519 (1.3.101.112) }, BIT STRING of 32 bytes.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The fields the signature binds to a command, taken out of the inner JSON
/// before the command's own fields are checked.
pub const BINDING_FIELDS: [&str; 3] = ["gateway", "command", "ts"];

/// How MES commands are authenticated (`[commands]`).
#[derive(Debug, Clone)]
pub struct Signing {
    /// The MES's public key; `None`: signed commands cannot be verified.
    pub key: Option<VerifyingKey>,
    /// Whether unsigned commands are refused.
    pub required: bool,
    /// How far a signed command's `ts` may be from the gateway's clock, and
    /// how long its id is remembered, in ms.
    pub window_ms: u64,
}

impl Default for Signing {
    /// No key, signatures not required (commands as before signing existed).
    fn default() -> Self {
        Signing {
            key: None,
            required: false,
            window_ms: 5 * 60 * 1000,
        }
    }
}

/// What [`Signing::open`] makes of a command payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Not an envelope, and signatures are not required: the payload as is.
    Unsigned,
    /// A verified envelope: the command's own fields (binding fields taken
    /// out), the inner JSON as signed (for the audit), and until when (ms)
    /// its id must be refused: its `ts` plus twice the window.
    Signed {
        fields: Vec<u8>,
        inner: String,
        remember_until_ms: u64,
    },
}

/// Why a command payload was refused before its fields were looked at. The
/// id, when the inner JSON could be read, correlates the result.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: String,
    pub id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    signed: String,
    sig: String,
}

impl Signing {
    /// Check the payload of a command received on topic `…/cmd/{name}` by
    /// gateway `gateway` at `now_ms`.
    pub fn open(
        &self,
        gateway: &str,
        name: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Opened, Rejected> {
        let reject = |reason: String, id: Option<String>| Rejected { reason, id };
        let is_envelope = serde_json::from_slice::<Map<String, Value>>(payload)
            .is_ok_and(|m| m.contains_key("signed") || m.contains_key("sig"));
        if !is_envelope {
            if self.required {
                return Err(reject(
                    "signature required: the command is not a signed envelope".into(),
                    None,
                ));
            }
            return Ok(Opened::Unsigned);
        }
        let envelope: Envelope = serde_json::from_slice(payload)
            .map_err(|e| reject(format!("malformed signed envelope: {e}"), None))?;
        let inner = STANDARD
            .decode(envelope.signed.as_bytes())
            .map_err(|e| reject(format!("malformed signed envelope: `signed`: {e}"), None))?;
        // Only to correlate the result; nothing unverified is acted on.
        let id_hint = serde_json::from_slice::<Map<String, Value>>(&inner)
            .ok()
            .and_then(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| super::command::answerable(id));
        let Some(key) = &self.key else {
            return Err(reject(
                "signed command, but no [commands] public_key_file is configured to verify it"
                    .into(),
                id_hint,
            ));
        };
        let sig = STANDARD
            .decode(envelope.sig.as_bytes())
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| {
                reject(
                    "malformed signed envelope: `sig` is not a base64 Ed25519 signature (64 bytes)"
                        .into(),
                    id_hint.clone(),
                )
            })?;
        key.verify_strict(&inner, &sig)
            .map_err(|_| reject("invalid signature".into(), id_hint.clone()))?;

        let mut fields: Map<String, Value> = serde_json::from_slice(&inner).map_err(|e| {
            reject(
                format!("invalid payload: signed part is not a JSON object: {e}"),
                id_hint.clone(),
            )
        })?;
        let text = |field: &str, v: Option<Value>| match v {
            Some(Value::String(s)) => Ok(s),
            _ => Err(reject(
                format!("invalid payload: signed part needs `{field}` (a string)"),
                id_hint.clone(),
            )),
        };
        let target = text("gateway", fields.remove("gateway"))?;
        let command = text("command", fields.remove("command"))?;
        let ts = fields
            .remove("ts")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| {
                reject(
                    "invalid payload: signed part needs `ts` (milliseconds since the Unix epoch)"
                        .into(),
                    id_hint.clone(),
                )
            })?;
        if target != gateway {
            return Err(reject(
                format!(
                    "signed for gateway `{}`, not this one (`{gateway}`)",
                    super::command::shown_name(&target)
                ),
                id_hint,
            ));
        }
        if command != name {
            return Err(reject(
                format!(
                    "signed for command `{}`, received on `{}`",
                    super::command::shown_name(&command),
                    super::command::shown_name(name)
                ),
                id_hint,
            ));
        }
        if ts.abs_diff(now_ms) > self.window_ms {
            return Err(reject(
                format!(
                    "timestamp outside the replay window: signed at {ts} ms, the gateway's clock says {now_ms} ms, {} s apart, more than the {} s allowed",
                    ts.abs_diff(now_ms) / 1000,
                    self.window_ms / 1000
                ),
                id_hint,
            ));
        }
        Ok(Opened::Signed {
            fields: serde_json::to_vec(&fields).unwrap_or_default(),
            inner: String::from_utf8_lossy(&inner).into_owned(),
            // Twice the window: a clock stepped back by up to a window after
            // the id was forgotten still finds it.
            remember_until_ms: ts.saturating_add(self.window_ms.saturating_mul(2)),
        })
    }
}

/// The Ed25519 public key in a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo,
/// RFC 8410), as `openssl pkey -pubout` writes it.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let form = "expected a PEM \"-----BEGIN PUBLIC KEY-----\" block holding an Ed25519 key (openssl pkey -in mes.key -pubout)";
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(body, _)| body)
        .ok_or_else(|| form.to_owned())?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("the PEM block is not base64 ({e})"))?;
    let raw = der
        .strip_prefix(&SPKI_ED25519_PREFIX)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| {
            "not an Ed25519 public key (an RSA or EC key? make one with: openssl genpkey -algorithm ed25519)"
                .to_owned()
        })?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 public key".to_owned())
}

/// The PEM `PUBLIC KEY` block of an Ed25519 key (tests, and a key made in
/// code for the MES side).
pub fn public_key_pem(key: &VerifyingKey) -> String {
    let mut der = SPKI_ED25519_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    const NOW: u64 = 1_765_000_000_000;

    fn signing(key: &SigningKey, required: bool) -> Signing {
        Signing {
            key: Some(key.verifying_key()),
            required,
            window_ms: 300_000,
        }
    }

    fn envelope(key: &SigningKey, inner: &str) -> Vec<u8> {
        let sig = key.sign(inner.as_bytes());
        serde_json::json!({
            "signed": STANDARD.encode(inner),
            "sig": STANDARD.encode(sig.to_bytes()),
        })
        .to_string()
        .into_bytes()
    }

    fn inner(gateway: &str, command: &str, ts: u64) -> String {
        format!(
            r#"{{"gateway":"{gateway}","command":"{command}","ts":{ts},"id":"c1","station":"st10","lot":"L1"}}"#
        )
    }

    #[test]
    fn a_good_envelope_opens_to_the_command_fields() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let got = signing(&key, true)
            .open(
                "gw1",
                "set-lot",
                &envelope(&key, &inner("gw1", "set-lot", NOW)),
                NOW + 1000,
            )
            .unwrap();
        let Opened::Signed {
            fields,
            remember_until_ms,
            ..
        } = got
        else {
            panic!("{got:?}")
        };
        let fields: Value = serde_json::from_slice(&fields).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({"id":"c1","station":"st10","lot":"L1"})
        );
        assert_eq!(remember_until_ms, NOW + 600_000);
    }

    #[test]
    fn refusals() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let good = inner("gw1", "set-lot", NOW);
        let mut tampered = envelope(&key, &good);
        let env: Value = serde_json::from_slice(&tampered).unwrap();
        let swapped = STANDARD.encode(good.replace("L1", "L2"));
        tampered = serde_json::json!({"signed": swapped, "sig": env["sig"]})
            .to_string()
            .into_bytes();
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (br#"{"id":"c1"}"#.to_vec(), true, "signature required"),
            (envelope(&other, &good), true, "invalid signature"),
            (tampered, true, "invalid signature"),
            (
                envelope(&key, &inner("gw2", "set-lot", NOW)),
                true,
                "signed for gateway `gw2`",
            ),
            (
                envelope(&key, &inner("gw1", "close-lot", NOW)),
                true,
                "signed for command `close-lot`",
            ),
            (
                envelope(&key, &inner("gw1", "set-lot", NOW - 301_000)),
                true,
                "outside the replay window",
            ),
            (
                envelope(&key, &inner("gw1", "set-lot", NOW + 301_000)),
                false,
                "outside the replay window",
            ),
            (
                br#"{"signed":"!!","sig":"AA=="}"#.to_vec(),
                false,
                "malformed signed envelope",
            ),
            (
                br#"{"signed":"e30=","sig":"AA==","x":1}"#.to_vec(),
                false,
                "malformed signed envelope",
            ),
            (
                envelope(&key, r#"{"command":"set-lot","ts":1}"#),
                false,
                "needs `gateway`",
            ),
        ];
        for (payload, required, fragment) in cases {
            let got = signing(&key, required).open("gw1", "set-lot", &payload, NOW);
            match got {
                Err(r) => assert!(r.reason.contains(fragment), "{fragment}: {}", r.reason),
                Ok(o) => panic!("{fragment}: opened {o:?}"),
            }
        }
        // Unsigned commands pass when signatures are not required.
        assert_eq!(
            signing(&key, false).open("gw1", "set-lot", br#"{"id":"c1"}"#, NOW),
            Ok(Opened::Unsigned)
        );
        // A signed command without a key to verify it is refused.
        let none = Signing::default().open("gw1", "set-lot", &envelope(&key, &good), NOW);
        assert!(none.unwrap_err().reason.contains("public_key_file"));
    }

    #[test]
    fn public_keys_round_trip_through_pem_and_other_forms_are_named() {
        let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert_eq!(parse_public_key(&public_key_pem(&key)), Ok(key));
        assert!(parse_public_key("hello").unwrap_err().contains("PEM"));
        // An EC P-256 key from `openssl genpkey -algorithm EC`.
        let ec = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0Hj3vQ3r3ZyBq0Rr4SgJQFQvQ0dW\nXzN1H9Gf3sY2WkB8yRQeVY0v8Lr6gKxq8ZbPpC9WkqTnLk3vJ1Z0yV3e1w==\n-----END PUBLIC KEY-----\n";
        assert!(parse_public_key(ec).unwrap_err().contains("not an Ed25519"));
    }
}
