//! A room event's `changes`: each differing field with its previous and
//! current value, typed, so an event is built and serialized without a
//! `serde_json::Value` tree (a poll's commit made ~80 allocations per event
//! that way).

use crate::room::RoomStatus;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// One field's value as the upstream sent it; `Null` when absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Number(u64),
    Text(String),
}

/// One differing field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub previous: FieldValue,
    pub current: FieldValue,
}

/// Field name → change, in field-name order (as SPEC's examples show them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes(pub Vec<(Cow<'static, str>, FieldChange)>);

impl Changes {
    /// Every top-level field of the snapshots that differs; `previous` None
    /// (no snapshot before) makes every present field a change.
    pub fn between(previous: Option<&RoomStatus>, current: &RoomStatus) -> Self {
        let before = fields(previous);
        let after = fields(Some(current));
        Self(
            before
                .into_iter()
                .zip(after)
                .filter(|((_, p), (_, c))| p != c)
                .map(|((name, previous), (_, current))| {
                    (Cow::Borrowed(name), FieldChange { previous, current })
                })
                .collect(),
        )
    }

    pub fn get(&self, field: &str) -> Option<&FieldChange> {
        self.0.iter().find(|(k, _)| k == field).map(|(_, c)| c)
    }

    pub fn contains_key(&self, field: &str) -> bool {
        self.get(field).is_some()
    }
}

/// The snapshot's fields by their wire names, sorted by name.
fn fields(s: Option<&RoomStatus>) -> [(&'static str, FieldValue); 9] {
    use FieldValue::*;
    let text = |v: Option<&String>| v.map_or(Null, |t| Text(t.clone()));
    let flag = |v: Option<bool>| v.map_or(Null, Bool);
    [
        ("createdAt", text(s.and_then(|s| s.created_at.as_ref()))),
        ("exists", flag(s.map(|s| s.exists))),
        ("hasTeacher", flag(s.and_then(|s| s.has_teacher))),
        ("isActive", flag(s.map(|s| s.is_active))),
        ("isRecording", flag(s.and_then(|s| s.is_recording))),
        (
            "participantCount",
            s.and_then(|s| s.participant_count).map_or(Null, Number),
        ),
        ("roomId", text(s.map(|s| &s.room_id))),
        ("startedAt", text(s.and_then(|s| s.started_at.as_ref()))),
        ("title", text(s.and_then(|s| s.title.as_ref()))),
    ]
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => s.serialize_u64(*n),
            Self::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, a boolean, a whole number or a string")
            }
            fn visit_unit<E>(self) -> Result<FieldValue, E> {
                Ok(FieldValue::Null)
            }
            fn visit_none<E>(self) -> Result<FieldValue, E> {
                Ok(FieldValue::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<FieldValue, E> {
                Ok(FieldValue::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<FieldValue, E> {
                Ok(FieldValue::Number(n))
            }
            fn visit_str<E>(self, t: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::Text(t.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Changes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Changes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of field changes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Changes, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, FieldChange>()? {
                    out.push((Cow::Owned(k), v));
                }
                Ok(Changes(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_serialize_as_an_object_in_field_order() {
        let idle = RoomStatus {
            is_active: false,
            participant_count: Some(0),
            ..RoomStatus::live_for_tests("r", 0)
        };
        let live = RoomStatus::live_for_tests("r", 3);
        let c = Changes::between(Some(&idle), &live);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "isActive": {"previous": false, "current": true},
                "participantCount": {"previous": 0, "current": 3},
            })
        );
        let back: Changes = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn no_snapshot_before_makes_every_present_field_a_change() {
        let c = Changes::between(None, &RoomStatus::not_found("r"));
        let names: Vec<&str> = c.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["exists", "isActive", "roomId"]);
        assert_eq!(c.get("exists").unwrap().previous, FieldValue::Null);
    }
}
