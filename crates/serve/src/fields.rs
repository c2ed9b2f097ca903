//! Request fields read from a JSON object one by one, so that every bad value is a 400 naming
//! its field (serde's derive would say "invalid type at line 1 column 40").

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answer: status, the field at fault (if any) and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The request field at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field: Some(field.to_string()),
            message: format!("{field}: {}", message.into()),
        }
    }

    /// Any status, no field.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            field: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.field,
            "code": self.status.as_u16(),
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

/// The body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// A boolean field.
pub fn boolean(map: &Map<String, Value>, field: &str, default: bool) -> Result<bool, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::field(field, "must be true or false")),
    }
}

/// An integer field in `min..=max`.
pub fn integer(
    map: &Map<String, Value>,
    field: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let out = || ApiError::field(field, format!("must be an integer in {min}..={max}"));
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(out()),
        },
        Some(_) => Err(out()),
    }
}

/// A number field accepted by `ok`, described by `range` in errors.
pub fn number(
    map: &Map<String, Value>,
    field: &str,
    default: f64,
    range: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && ok(v) => Ok(v),
            _ => Err(ApiError::field(
                field,
                format!("must be a number in {range}"),
            )),
        },
        Some(_) => Err(ApiError::field(
            field,
            format!("must be a number in {range}"),
        )),
    }
}

/// A string or a list of strings (1 to `max`).
pub fn strings(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::field(
            field,
            format!("must be a string or a list of 1 to {max} strings"),
        )
    };
    match map.get(field) {
        None | Some(Value::Null) if required => Err(ApiError::field(field, "is required")),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= max => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_themselves_in_errors() {
        let map = object(br#"{"a": "x", "n": -1, "t": 1e400, "p": ["a", 1], "b": true}"#);
        // 1e400 is not a JSON number serde accepts as finite: the body fails as a whole.
        assert!(map.is_err());
        let map = object(br#"{"a": "x", "n": -1, "t": 2.5, "p": ["a", 1], "b": true}"#).unwrap();
        assert!(
            boolean(&map, "a", false)
                .unwrap_err()
                .message
                .starts_with("a:")
        );
        assert!(boolean(&map, "b", false).unwrap());
        assert_eq!(integer(&map, "n", 5, -1, 3), Ok(-1));
        assert!(
            integer(&map, "n", 5, 0, 3)
                .unwrap_err()
                .message
                .contains("0..=3")
        );
        assert!(integer(&map, "t", 5, 0, 3).is_err());
        assert_eq!(number(&map, "t", 1.0, "(0, 100]", |v| v > 0.0), Ok(2.5));
        assert_eq!(integer(&map, "missing", 5, 0, 3), Ok(5));
        assert!(strings(&map, "p", 4, true).unwrap_err().field.as_deref() == Some("p"));
        assert_eq!(strings(&map, "a", 4, true).unwrap(), ["x"]);
        assert!(strings(&map, "zz", 4, true).is_err());
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").unwrap_err().message.contains("not valid JSON"));
    }
}
