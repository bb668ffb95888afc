//! Text that clients send, checked once for every service: trimmed, bounded in length, free of
//! control characters (Postgres refuses NUL bytes, and no name or address needs a tab or an escape
//! sequence). A field that fails says which one and why, in the API's own names.

/// A field a client filled in wrongly. `field` is the API's path to it, such as `address.city`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidField {
    pub field: String,
    pub problem: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

impl From<InvalidField> for tonic::Status {
    fn from(e: InvalidField) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// `value` trimmed; it must not be blank.
pub fn required(field: &str, value: &str, max_chars: usize) -> Result<String, InvalidField> {
    let value = optional(field, value, max_chars)?;
    if value.is_empty() {
        return Err(InvalidField::new(field, "is required"));
    }
    Ok(value)
}

/// `value` trimmed; it may be empty.
pub fn optional(field: &str, value: &str, max_chars: usize) -> Result<String, InvalidField> {
    let value = value.trim();
    if value.chars().count() > max_chars {
        return Err(InvalidField::new(field, format!("is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(required("name", "  Ajanta ", 10), Ok("Ajanta".to_owned()));
        assert_eq!(required("name", "   ", 10).unwrap_err().to_string(), "name is required");
        assert_eq!(optional("street2", "", 10), Ok(String::new()));
        assert_eq!(required("name", "abcdefghijk", 10).unwrap_err().to_string(), "name is longer than 10 characters");
        assert_eq!(required("name", "🍛🍛", 2), Ok("🍛🍛".to_owned()), "characters, not bytes");
        for bad in ["a\0b", "a\u{7f}", "line\nbreak", "\u{1b}[31m"] {
            assert_eq!(required("name", bad, 10).unwrap_err().problem, "contains control characters", "{bad:?}");
        }
    }
}
