//! A station's context and its persisted form.

use serde::{Deserialize, Serialize};

use crate::record::ContextField;

/// What every record made at a station is stamped with. A field is `None`
/// while unknown: never a stale or invented value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// When the operator logged in (shift-end logout spares a login made
    /// just before the change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_since_ms: Option<u64>,
    /// GTINs the work order may consume, when the MES sent its material
    /// list with the order; `None`: any material is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materials: Option<Vec<String>>,
}

impl Context {
    /// Set lot, order or operator; returns the previous value. A material is
    /// not part of the stamped context (a lot consumes many).
    pub fn set(&mut self, field: ContextField, value: Option<String>) -> Option<String> {
        let slot = match field {
            ContextField::Lot => &mut self.lot,
            ContextField::Order => &mut self.order,
            ContextField::Operator => &mut self.operator,
            ContextField::Material => return None,
        };
        std::mem::replace(slot, value)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode a persisted context; `None` (and a log line) when damaged, so
    /// the station starts with an unknown context rather than a wrong one.
    pub fn decode(station: &str, bytes: &[u8]) -> Option<Context> {
        match serde_json::from_slice(bytes) {
            Ok(ctx) => Some(ctx),
            Err(err) => {
                tracing::error!(station, error = %err, "persisted context unreadable; starting with an unknown context");
                None
            }
        }
    }
}
