//! Config errors in the words of a config file. serde and `toml` describe a
//! type mismatch in Rust terms (`invalid type: string "lots", expected
//! usize`); someone editing a TOML file should read `expected a whole
//! number, got "lots"`. Only the message changes: the file, line, column
//! and key are found as before (`error::key_at`).

/// `message` (from `toml`) with serde's type names replaced by TOML ones.
/// A message this does not recognize is returned unchanged.
pub(super) fn plain(message: &str) -> String {
    let mismatch = message
        .strip_prefix("invalid type: ")
        .map(|rest| (rest, false))
        .or_else(|| message.strip_prefix("invalid value: ").map(|rest| (rest, true)));
    if let Some((rest, out_of_range)) = mismatch {
        // The expected part never holds ", expected ", but the found part
        // may (a string value is quoted as written).
        if let Some((got, expected)) = rest.rsplit_once(", expected ") {
            let got = found(got);
            let expected = if out_of_range { range(expected, &got) } else { wanted(expected) };
            return format!("expected {expected}, got {got}");
        }
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing required key {field}");
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    message.to_owned()
}

/// What serde says was found, as it was written in the file.
fn found(got: &str) -> String {
    for kind in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = got.strip_prefix(kind) {
            return v.trim_matches('`').to_owned();
        }
    }
    if let Some(v) = got.strip_prefix("string ") {
        return v.to_owned();
    }
    match got {
        "sequence" => "an array".to_owned(),
        // A TOML date-time reaches serde as a map too; it is rare enough
        // in a config that "a table" is the better guess.
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// What serde expected, in TOML terms.
fn wanted(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" | "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "a quoted string".to_owned(),
        "a sequence" => "an array [ ... ]".to_owned(),
        "a map" => "a table".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// For a number out of its type's range: the range, in words.
fn range(expected: &str, got: &str) -> String {
    let max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "usize" | "u64" => u64::MAX,
        other => return wanted(other),
    };
    if got.starts_with('-') || max == u64::MAX {
        "a whole number, 0 or more".to_owned()
    } else {
        format!("a whole number from 0 to {max}")
    }
}
