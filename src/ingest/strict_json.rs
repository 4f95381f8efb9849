//! Parsing an event's JSON with the limits a public endpoint needs: nesting
//! depth, string length, keys per object, and no duplicate keys (which plain
//! parsing would resolve silently, last one wins). One pass, no second walk.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::domain::pattern::shown;
use crate::http::error::{EventError, EventErrorCode};

#[derive(Clone, Copy, Debug)]
pub struct JsonLimits {
    pub max_depth: usize,
    pub max_string_bytes: usize,
    pub max_object_keys: usize,
}

/// Parses text already known to be valid JSON into a value within the limits.
pub fn parse(text: &str, limits: &JsonLimits) -> Result<Value, EventError> {
    let violation = RefCell::new(None);
    let seed = Strict { limits, depth: 0, violation: &violation, key: None };
    // serde_json's own recursion limit (128) stays as a second fence.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match seed.deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(e) => Err(violation.into_inner().unwrap_or_else(|| {
            EventError::new(EventErrorCode::InvalidEvent, None, format!("the event is not valid JSON: {e}"))
        })),
    }
}

struct Strict<'a> {
    limits: &'a JsonLimits,
    depth: usize,
    violation: &'a RefCell<Option<EventError>>,
    /// The key this value belongs to, for error messages.
    key: Option<&'a str>,
}

impl Strict<'_> {
    fn fail<E: serde::de::Error>(&self, code: EventErrorCode, message: String) -> E {
        let field = self.key.map(shown);
        *self.violation.borrow_mut() = Some(EventError::new(code, field.as_deref(), message.clone()));
        E::custom(message)
    }

    fn nested<E: serde::de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            let message = format!("the event nests deeper than {} levels", self.limits.max_depth);
            return Err(self.fail(EventErrorCode::TooDeep, message));
        }
        Ok(depth)
    }

    fn string<E: serde::de::Error>(&self, s: &str) -> Result<Value, E> {
        if s.len() > self.limits.max_string_bytes {
            let message = format!("a string is longer than {} bytes", self.limits.max_string_bytes);
            return Err(self.fail(EventErrorCode::ValueTooLong, message));
        }
        Ok(Value::String(s.to_owned()))
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.string(&v)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) =
            seq.next_element_seed(Strict { limits: self.limits, depth, violation: self.violation, key: self.key })?
        {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let at_key = Strict { limits: self.limits, depth, violation: self.violation, key: Some(&key) };
            if key.len() > self.limits.max_string_bytes {
                let message = format!("a key is longer than {} bytes", self.limits.max_string_bytes);
                return Err(at_key.fail(EventErrorCode::ValueTooLong, message));
            }
            if !seen.insert(key.clone()) {
                let message = format!("the key {:?} appears twice in one object", shown(&key));
                return Err(at_key.fail(EventErrorCode::DuplicateKey, message));
            }
            if seen.len() > self.limits.max_object_keys {
                // Named by the object's own key (e.g. `properties`), not by the key that overflowed it.
                let message = format!("an object holds more than {} keys", self.limits.max_object_keys);
                return Err(self.fail(EventErrorCode::TooManyKeys, message));
            }
            let value = map.next_value_seed(at_key)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits { max_depth: 4, max_string_bytes: 10, max_object_keys: 3 };

    fn code(text: &str) -> Option<EventErrorCode> {
        parse(text, &LIMITS).err().map(|e| e.code)
    }

    #[test]
    fn values_within_the_limits_parse_as_usual() {
        let text = r#"{"a": [1, -2, 3.5, true, null], "b": {"c": {"d": "short"}}}"#;
        assert_eq!(parse(text, &LIMITS).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn each_limit_is_enforced() {
        assert_eq!(code(r#"{"a": {"b": {"c": {"d": {}}}}}"#), Some(EventErrorCode::TooDeep));
        assert_eq!(code(r#"[[[[[1]]]]]"#), Some(EventErrorCode::TooDeep));
        assert_eq!(code(r#"{"a": "this is too long"}"#), Some(EventErrorCode::ValueTooLong));
        assert_eq!(code(r#"{"a very long key": 1}"#), Some(EventErrorCode::ValueTooLong));
        assert_eq!(code(r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#), Some(EventErrorCode::TooManyKeys));
        let duplicate = parse(r#"{"p": {"x": 1, "x": 2}}"#, &LIMITS).unwrap_err();
        assert_eq!((duplicate.code, duplicate.field.as_deref()), (EventErrorCode::DuplicateKey, Some("x")));
    }
}
