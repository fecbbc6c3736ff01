//! MES commands: strict validation of what arrives on `…/cmd/{name}`.
//!
//! A command is accepted for the station only when it is small, not retained,
//! valid JSON matching the command's schema exactly (unknown fields rejected),
//! and its values are plain printable text. Anything else becomes a
//! [`Refused`] with a reason; the caller audits it and publishes the result.
//!
//! A signed command (`uplink::signed`) is verified first, then its inner
//! JSON goes through the same checks.
//!
//! The field rules themselves ([`validate`]) are shared with local commands
//! (`linegate lot …` through `app::control`), so a value the MES may not
//! set cannot be set locally either.

use serde::Deserialize;

use super::signed::{Opened, Signing};
use crate::record::CommandOrigin;
use crate::station::{Command, CommandAction};

/// Largest command payload accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Largest signed envelope accepted, in bytes: a command of
/// [`MAX_COMMAND_BYTES`] in base64, and room for the signature.
pub const MAX_ENVELOPE_BYTES: usize = MAX_COMMAND_BYTES / 3 * 4 + 256;
/// Longest id, station or value in a command.
const MAX_FIELD: usize = 64;

/// A command refused before reaching a station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub name: String,
    /// The command id when one could be read.
    pub id: Option<String>,
    pub reason: String,
    pub payload: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLot {
    id: String,
    station: String,
    /// Required, `null` closes the lot: a missing field must not close it.
    #[serde(deserialize_with = "nullable")]
    lot: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOrder {
    id: String,
    station: String,
    #[serde(deserialize_with = "nullable")]
    order: Option<String>,
    /// GTINs the order may consume (8, 12, 13 or 14 digits).
    #[serde(default)]
    materials: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenLot {
    id: String,
    station: String,
    #[serde(default)]
    lot: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseLot {
    id: String,
    station: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOperator {
    id: String,
    station: String,
    #[serde(deserialize_with = "nullable")]
    operator: Option<String>,
}

/// Most GTINs one order's material list may hold.
pub const MAX_MATERIALS: usize = 200;

/// A field that must be present but may be `null` (serde treats a missing
/// `Option` field as `None`; a field with `deserialize_with` and no default
/// is required).
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Only used to recover the id of a command that failed validation, so the
/// result can be correlated.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// The command names this gateway understands.
pub const COMMANDS: &[&str] = &[
    "set-lot",
    "open-lot",
    "close-lot",
    "set-order",
    "set-operator",
];

/// Validate an unsigned command received on topic `…/cmd/{name}` (no key
/// configured, signatures not required).
pub fn parse(name: &str, payload: &[u8], retained: bool) -> Result<Command, Refused> {
    receive(name, payload, retained, &Signing::default(), "", 0)
}

/// Validate a command received on topic `…/cmd/{name}` by gateway `gateway`
/// at `now_ms`: its size, the retain flag, its signature as `signing` asks
/// (`uplink::signed`), then the command's own fields. A signed command's
/// payload (kept for the audit) is the inner JSON as signed, and it carries
/// until when its id must be refused as a replay.
pub fn receive(
    name: &str,
    payload: &[u8],
    retained: bool,
    signing: &Signing,
    gateway: &str,
    now_ms: u64,
) -> Result<Command, Refused> {
    // The name comes from the topic: untrusted and unbounded. Only a bounded
    // rendering of it ever goes into records.
    let shown = shown_name(name);
    let name = shown.as_str();
    let text = String::from_utf8_lossy(payload).into_owned();
    let refuse = |id: Option<String>, reason: String| Refused {
        name: name.to_owned(),
        id,
        reason,
        payload: text.clone(),
    };
    let too_large = || format!("payload larger than {MAX_COMMAND_BYTES} bytes");
    // A signed envelope carries its command in base64 (4/3 of its size).
    if payload.len() > MAX_ENVELOPE_BYTES {
        return Err(refuse(None, too_large()));
    }
    let id_hint = serde_json::from_slice::<IdOnly>(payload)
        .ok()
        .and_then(|i| i.id)
        .filter(|id| valid_text(id));
    if retained {
        return Err(refuse(
            id_hint,
            "retained command ignored: commands must not be retained".into(),
        ));
    }
    let (fields, text, remember_until_ms) = match signing.open(gateway, name, payload, now_ms) {
        Ok(Opened::Unsigned) => (payload.to_vec(), text.clone(), None),
        Ok(Opened::Signed {
            fields,
            inner,
            remember_until_ms,
        }) => (fields, inner, Some(remember_until_ms)),
        Err(rejected) => return Err(refuse(rejected.id.or(id_hint), rejected.reason)),
    };
    // The command's own bytes: the payload, or the inner JSON as signed.
    let size = if remember_until_ms.is_some() {
        text.len()
    } else {
        payload.len()
    };
    if size > MAX_COMMAND_BYTES {
        return Err(refuse(id_hint, too_large()));
    }
    let payload = fields.as_slice();
    let id_hint = id_hint.or_else(|| {
        serde_json::from_slice::<IdOnly>(payload)
            .ok()
            .and_then(|i| i.id)
            .filter(|id| valid_text(id))
    });
    let refuse = |id: Option<String>, reason: String| Refused {
        name: name.to_owned(),
        id,
        reason,
        payload: text.clone(),
    };
    let parsed = match name {
        "set-lot" => serde_json::from_slice::<SetLot>(payload)
            .map(|c| (c.id, c.station, CommandAction::SetLot(c.lot))),
        "open-lot" => serde_json::from_slice::<OpenLot>(payload)
            .map(|c| (c.id, c.station, CommandAction::OpenLot(c.lot))),
        "close-lot" => serde_json::from_slice::<CloseLot>(payload)
            .map(|c| (c.id, c.station, CommandAction::CloseLot)),
        "set-order" => serde_json::from_slice::<SetOrder>(payload).map(|c| {
            let action = CommandAction::SetOrder {
                order: c.order,
                materials: c.materials,
            };
            (c.id, c.station, action)
        }),
        "set-operator" => serde_json::from_slice::<SetOperator>(payload)
            .map(|c| (c.id, c.station, CommandAction::SetOperator(c.operator))),
        other => {
            let known = COMMANDS.join(", ");
            return Err(refuse(
                id_hint,
                format!("unknown command `{other}`; known: {known}"),
            ));
        }
    };
    let (id, station, action) =
        parsed.map_err(|e| refuse(id_hint.clone(), format!("invalid payload: {e}")))?;
    let mut cmd = validate(name, id, station, action, text.clone(), CommandOrigin::Mes)
        .map_err(|reason| refuse(id_hint, reason))?;
    cmd.remember_until_ms = remember_until_ms;
    Ok(cmd)
}

/// Check a command's fields with the rules every command follows, whether it
/// came from the MES or from `linegate lot` (the control socket): id, station
/// and value 1 to 64 printable characters; a work order's materials at most
/// [`MAX_MATERIALS`] valid GTINs, normalised to 14 digits. Returns the
/// command ready for the pipeline, or the reason it is refused.
pub fn validate(
    name: &str,
    id: String,
    station: String,
    mut action: CommandAction,
    payload: String,
    origin: CommandOrigin,
) -> Result<Command, String> {
    let value = match &action {
        CommandAction::SetLot(v)
        | CommandAction::OpenLot(v)
        | CommandAction::SetOperator(v)
        | CommandAction::SetOrder { order: v, .. } => v.as_deref(),
        CommandAction::CloseLot => None,
    };
    for (field, text) in [
        ("id", Some(id.as_str())),
        ("station", Some(station.as_str())),
        ("value", value),
    ] {
        if let Some(text) = text
            && !valid_text(text)
        {
            return Err(format!(
                "invalid {field}: 1 to {MAX_FIELD} printable characters expected"
            ));
        }
    }
    if let CommandAction::SetOrder {
        materials: Some(list),
        ..
    } = &mut action
    {
        if list.len() > MAX_MATERIALS {
            return Err(format!("invalid materials: at most {MAX_MATERIALS} GTINs"));
        }
        for gtin in list.iter_mut() {
            match crate::gs1::normalize_gtin(gtin) {
                Some(g) => *gtin = g,
                None => {
                    return Err(format!(
                        "invalid materials: {:?} is not a GTIN (8, 12, 13 or 14 digits with a valid check digit)",
                        shown_name(gtin)
                    ));
                }
            }
        }
    }
    Ok(Command {
        name: name.to_owned(),
        id,
        station,
        action,
        payload,
        origin,
        remember_until_ms: None,
    })
}

/// A command name as it may appear in records: at most 64 characters,
/// control characters replaced.
pub fn shown_name(name: &str) -> String {
    name.chars()
        .take(MAX_FIELD)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Whether a result may be published for a command received under `name`
/// (its topic is `…/cmd/{name}/result`): only for bounded, printable names.
pub fn answerable(name: &str) -> bool {
    valid_text(name)
}

fn valid_text(s: &str) -> bool {
    (1..=MAX_FIELD).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_table() {
        // (name, payload, retained, Ok(action) or Err(reason fragment))
        let cases: &[(&str, &str, bool, Result<CommandAction, &str>)] = &[
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","lot":"L1"}"#,
                false,
                Ok(CommandAction::SetLot(Some("L1".into()))),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","lot":null}"#,
                false,
                Ok(CommandAction::SetLot(None)),
            ),
            (
                "set-order",
                r#"{"id":"c1","station":"st10","order":"WO1"}"#,
                false,
                Ok(CommandAction::SetOrder {
                    order: Some("WO1".into()),
                    materials: None,
                }),
            ),
            (
                "set-order",
                r#"{"id":"c1","station":"st10","order":"WO1","materials":["09506000134352","95060001343"]}"#,
                false,
                Err("not a GTIN"),
            ),
            (
                "set-order",
                r#"{"id":"c1","station":"st10","order":"WO1","materials":["9506000134352","09506000134353"]}"#,
                false,
                Err("not a GTIN"),
            ),
            (
                "set-order",
                r#"{"id":"c1","station":"st10","order":"WO1","materials":["9506000134352","96385074"]}"#,
                false,
                Ok(CommandAction::SetOrder {
                    order: Some("WO1".into()),
                    materials: Some(vec!["09506000134352".into(), "00000096385074".into()]),
                }),
            ),
            (
                "open-lot",
                r#"{"id":"c1","station":"st10"}"#,
                false,
                Ok(CommandAction::OpenLot(None)),
            ),
            (
                "open-lot",
                r#"{"id":"c1","station":"st10","lot":"L9"}"#,
                false,
                Ok(CommandAction::OpenLot(Some("L9".into()))),
            ),
            (
                "close-lot",
                r#"{"id":"c1","station":"st10"}"#,
                false,
                Ok(CommandAction::CloseLot),
            ),
            (
                "close-lot",
                r#"{"id":"c1","station":"st10","lot":"L9"}"#,
                false,
                Err("unknown field"),
            ),
            (
                "set-operator",
                r#"{"id":"c1","station":"st10","operator":"OP-7"}"#,
                false,
                Ok(CommandAction::SetOperator(Some("OP-7".into()))),
            ),
            (
                "set-operator",
                r#"{"id":"c1","station":"st10","operator":null}"#,
                false,
                Ok(CommandAction::SetOperator(None)),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","lot":"L1"}"#,
                true,
                Err("retained"),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10"}"#,
                false,
                Err("missing field `lot`"),
            ),
            (
                "set-order",
                r#"{"id":"c1","station":"st10","materials":["09506000134352"]}"#,
                false,
                Err("missing field `order`"),
            ),
            (
                "set-operator",
                r#"{"id":"c1","station":"st10"}"#,
                false,
                Err("missing field `operator`"),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","lot":"L1","x":1}"#,
                false,
                Err("unknown field"),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","order":"L1"}"#,
                false,
                Err("unknown field"),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10"#,
                false,
                Err("invalid payload"),
            ),
            (
                "set-lot",
                r#"{"station":"st10","lot":"L1"}"#,
                false,
                Err("missing field `id`"),
            ),
            (
                "set-lot",
                r#"{"id":"c1","station":"st10","lot":""}"#,
                false,
                Err("invalid value"),
            ),
            (
                "set-lot",
                "{\"id\":\"c1\",\"station\":\"st10\",\"lot\":\"a\\u0000b\"}",
                false,
                Err("invalid value"),
            ),
            ("reboot", r#"{"id":"c1"}"#, false, Err("unknown command")),
            ("set-lot", "\u{ff}\u{fe}", false, Err("invalid payload")),
        ];
        for (name, payload, retained, expected) in cases {
            let got = parse(name, payload.as_bytes(), *retained);
            match (expected, got) {
                (Ok(action), Ok(cmd)) => assert_eq!(&cmd.action, action, "{payload}"),
                (Err(fragment), Err(refused)) => {
                    assert!(
                        refused.reason.contains(fragment),
                        "{payload}: {}",
                        refused.reason
                    )
                }
                (expected, got) => panic!("{payload}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn oversized_payloads_are_refused_before_parsing() {
        let big = format!(
            r#"{{"id":"c1","station":"st10","lot":"{}"}}"#,
            "x".repeat(MAX_COMMAND_BYTES)
        );
        let refused = parse("set-lot", big.as_bytes(), false).unwrap_err();
        assert!(refused.reason.contains("larger than"));
    }

    #[test]
    fn signed_commands_carry_their_inner_json_and_replay_deadline() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        use ed25519_dalek::{Signer as _, SigningKey};
        let key = SigningKey::from_bytes(&[3; 32]);
        let signing = Signing {
            key: Some(key.verifying_key()),
            required: true,
            window_ms: 60_000,
        };
        let envelope = |inner: &str| {
            let sig = key.sign(inner.as_bytes());
            serde_json::json!({"signed": STANDARD.encode(inner), "sig": STANDARD.encode(sig.to_bytes())})
                .to_string()
        };
        let inner = r#"{"gateway":"gw1","command":"set-lot","ts":1000,"id":"c1","station":"st10","lot":"L1"}"#;
        let cmd = receive(
            "set-lot",
            envelope(inner).as_bytes(),
            false,
            &signing,
            "gw1",
            2000,
        )
        .unwrap();
        assert_eq!(cmd.action, CommandAction::SetLot(Some("L1".into())));
        assert_eq!(cmd.payload, inner);
        assert_eq!(cmd.remember_until_ms, Some(121_000));
        // The command's own rules apply to the inner JSON.
        let bad = r#"{"gateway":"gw1","command":"set-lot","ts":1000,"id":"c2","station":"st10","lot":"L1","x":1}"#;
        let refused = receive(
            "set-lot",
            envelope(bad).as_bytes(),
            false,
            &signing,
            "gw1",
            2000,
        )
        .unwrap_err();
        assert!(
            refused.reason.contains("unknown field"),
            "{}",
            refused.reason
        );
        assert_eq!(refused.id.as_deref(), Some("c2"));
        // So does the size, on the inner bytes.
        let big = format!(
            r#"{{"gateway":"gw1","command":"set-lot","ts":1000,"id":"c3","station":"st10","lot":"{}"}}"#,
            "x".repeat(MAX_COMMAND_BYTES)
        );
        let refused = receive(
            "set-lot",
            envelope(&big).as_bytes(),
            false,
            &signing,
            "gw1",
            2000,
        )
        .unwrap_err();
        assert!(refused.reason.contains("larger than"), "{}", refused.reason);
        // Unsigned commands have none.
        assert_eq!(
            parse(
                "set-lot",
                br#"{"id":"c1","station":"st10","lot":"L1"}"#,
                false
            )
            .unwrap()
            .remember_until_ms,
            None
        );
    }

    #[test]
    fn huge_command_names_are_bounded_in_what_is_recorded() {
        let name = "x".repeat(40_000);
        let refused = parse(&name, br#"{"id":"c1"}"#, false).unwrap_err();
        assert_eq!(refused.name.len(), MAX_FIELD);
        assert!(refused.reason.len() < 200, "{}", refused.reason.len());
        assert!(!answerable(&name));
        assert!(answerable("set-lot"));
    }

    #[test]
    fn refusals_keep_the_id_for_correlation() {
        let refused = parse(
            "set-lot",
            br#"{"id":"c7","station":"st10","bogus":1}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(refused.id.as_deref(), Some("c7"));
    }

    /// Property: arbitrary bytes on any command topic never panic, and are
    /// either a valid command or refused with a reason.
    #[test]
    fn arbitrary_payloads_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let seeds: &[&[u8]] = &[
            br#"{"id":"c1","station":"st10","lot":"L1"}"#,
            br#"{"id":"c1","station":"st10","order":null}"#,
        ];
        for i in 0..5000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.usize(1..8) {
                match rng.u8(0..3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.usize(0..bytes.len());
                        bytes[at] = rng.u8(..);
                    }
                    1 => bytes.insert(rng.usize(0..=bytes.len()), rng.u8(..)),
                    _ if !bytes.is_empty() => {
                        bytes.truncate(rng.usize(0..bytes.len()));
                    }
                    _ => {}
                }
            }
            let name = ["set-lot", "set-order", "x"][i % 3];
            match parse(name, &bytes, rng.bool()) {
                Ok(cmd) => assert!(valid_text(&cmd.id) && valid_text(&cmd.station)),
                Err(refused) => assert!(!refused.reason.is_empty()),
            }
        }
    }
}
