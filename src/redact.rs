//! Personal data in logs: MSISDNs and e-mail addresses are never logged in
//! full. Use these in every `tracing` field that could carry one.

/// `+15551230100` → `+1555•••0100`: country/area prefix and last four.
pub fn msisdn(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..chars.len().min(5).min(chars.len() - 4)].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}•••{tail}")
}

/// `maria.lopez@example.com` → `m•••@example.com`.
pub fn email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

/// Redact whichever of the two `to` is.
pub fn contact(s: &str) -> String {
    if s.contains('@') {
        email(s)
    } else {
        msisdn(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_identifying_survives() {
        assert_eq!(msisdn("+15551230100"), "+1555•••0100");
        assert!(!msisdn("+15551230100").contains("123"));
        assert_eq!(msisdn("12345"), "•••••");
        assert_eq!(email("maria.lopez@example.com"), "m•••@example.com");
        assert_eq!(contact("ana@example.org"), "a•••@example.org");
        assert_eq!(email("no-at-sign"), "•••");
    }
}
