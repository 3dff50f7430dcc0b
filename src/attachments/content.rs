//! What a file is and how it is offered: the stored type from the file's own magic bytes,
//! the type it is served as (never one a browser would run), and a download name that is
//! safe in a header and on any file system.

/// Types a browser renders or runs in the site's origin: served as bytes instead.
const ACTIVE: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
    "application/x-shockwave-flash",
    "application/pdf",
];

pub const OCTETS: &str = "application/octet-stream";

/// The type to record: what the magic bytes say when they say anything (they win over the
/// declaration), else the declared type if it is a well-formed plain text type, else bytes.
pub fn stored_type(declared: Option<&str>, head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    let declared = declared.map(|d| d.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).unwrap_or_default();
    let plain = declared.starts_with("text/") || declared == "application/json";
    // Text, or text cut inside its last character where the head ends.
    let text = std::str::from_utf8(head).map_or_else(|e| e.error_len().is_none(), |_| true);
    if plain && text { declared } else { OCTETS.to_string() }
}

/// The type a download carries.
pub fn served_type(stored: &str) -> &str {
    if ACTIVE.contains(&stored) { OCTETS } else { stored }
}

/// A file name fit to show and to offer: no path, no control characters, at most 255
/// bytes; `None` when nothing is left.
pub fn clean_name(name: &str) -> Option<String> {
    let tidy = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>().trim().trim_matches('.').trim().to_string();
    let mut out = tidy(name.rsplit(['/', '\\']).next().unwrap_or(""));
    if out.is_empty() {
        // Nothing after the last separator ("notes/."): keep the rest, separators made safe.
        out = tidy(&name.replace(['/', '\\'], "_"));
    }
    while out.len() > 255 {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// `Content-Disposition: attachment` with an ASCII fallback and the UTF-8 name (RFC 6266).
pub fn disposition(name: &str) -> String {
    let ascii: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || " .-_()[]".contains(c) { c } else { '_' }).collect();
    let mut encoded = String::new();
    for byte in name.as_bytes() {
        if byte.is_ascii_alphanumeric() || b".-_".contains(byte) {
            encoded.push(*byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes_and_active_ones_are_served_as_bytes() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0];
        assert_eq!(stored_type(Some("text/plain"), &png), "image/png", "the bytes win");
        assert_eq!(stored_type(Some("text/plain; charset=utf-8"), b"hello"), "text/plain");
        assert_eq!(stored_type(Some("text/html"), b"<script>alert(1)</script>"), "text/html");
        assert_eq!(served_type("text/html"), OCTETS);
        assert_eq!(served_type("image/svg+xml"), OCTETS);
        assert_eq!(served_type("image/png"), "image/png");
        assert_eq!(stored_type(Some("image/png"), b"not a png"), OCTETS, "a claimed image that is not one is bytes");
        assert_eq!(stored_type(None, &[0xff, 0xfe, 0x00]), OCTETS);
    }

    #[test]
    fn names_lose_paths_and_control_characters_and_headers_stay_safe() {
        assert_eq!(clean_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean_name("C:\\Users\\me\\report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(clean_name("bad\r\nname.txt").as_deref(), Some("badname.txt"));
        assert_eq!(clean_name(" .. "), None);
        assert_eq!(clean_name("notes/.").as_deref(), Some("notes_"));
        let d = disposition("résumé \"final\".pdf");
        assert!(d.starts_with("attachment; filename=\"r_sum_ _final_.pdf\""), "{d}");
        assert!(d.ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"), "{d}");
    }
}
