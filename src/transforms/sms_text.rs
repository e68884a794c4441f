//! SMS text encoding for outbound notices: whether a text can go as GSM
//! 03.38 7-bit (basic table plus the extension table, whose characters take
//! an escape and so two septets) or needs UCS-2, how many units it takes,
//! and how it splits into the parts of a concatenated SMS (160 septets or
//! 70 UCS-2 units alone; 153 / 67 per part once a UDH is needed) without
//! splitting an escape sequence or a surrogate pair. Pure; no allocation
//! except in [`split`].

use serde::Serialize;

/// How a text is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coding {
    /// GSM 03.38 default alphabet, 7 bits per septet.
    Gsm7,
    /// UTF-16 code units (what gateways call UCS-2 carries them as-is).
    Ucs2,
}

/// Single-message and per-part limits, in units of the coding.
const fn limits(c: Coding) -> (usize, usize) {
    match c {
        Coding::Gsm7 => (160, 153),
        Coding::Ucs2 => (70, 67),
    }
}

/// Septets a char takes in GSM-7: 1 in the basic table, 2 in the extension
/// table (escape + char), `None` if it is not in the alphabet.
fn gsm_septets(ch: char) -> Option<usize> {
    match ch {
        '@' | '£' | '$' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | '\n' | 'Ø' | 'ø' | '\r' | 'Å' | 'å' => {
            Some(1)
        }
        'Δ' | '_' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' => {
            Some(1)
        }
        ' ' | '!' | '"' | '#' | '¤' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/' => Some(1),
        '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' | '¡' | 'A'..='Z' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' => {
            Some(1)
        }
        'a'..='z' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Units `ch` takes in `coding` (`coding` must be able to carry it).
fn char_units(ch: char, coding: Coding) -> usize {
    match coding {
        Coding::Gsm7 => gsm_septets(ch).unwrap_or(1),
        Coding::Ucs2 => ch.len_utf16(),
    }
}

/// The coding a text needs: GSM-7 when every char is in the GSM 03.38
/// basic or extension table, else UCS-2.
pub fn coding(text: &str) -> Coding {
    if text.chars().all(|c| gsm_septets(c).is_some()) {
        Coding::Gsm7
    } else {
        Coding::Ucs2
    }
}

/// Length in the coding's units: septets (extension chars count 2) or
/// UTF-16 code units (a char outside the BMP is a surrogate pair: 2).
pub fn units(text: &str, coding: Coding) -> usize {
    text.chars().map(|c| char_units(c, coding)).sum()
}

/// What a text costs to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segments {
    pub coding: Coding,
    /// Units in the whole text.
    pub units: usize,
    /// Parts on the air (1 for an empty text).
    pub count: usize,
}

/// Greedy packing into parts of at most `per_part` units, a char never
/// split; calls `cut` with the byte offset where each new part starts.
fn pack(text: &str, coding: Coding, per_part: usize, mut cut: impl FnMut(usize)) -> usize {
    let mut parts = 1;
    let mut used = 0;
    for (i, ch) in text.char_indices() {
        let u = char_units(ch, coding);
        if used + u > per_part {
            parts += 1;
            used = 0;
            cut(i);
        }
        used += u;
    }
    parts
}

/// Segments a text takes: one if it fits 160 septets / 70 units, else the
/// number of parts [`split`] makes (counted the same way).
pub fn segments(text: &str) -> Segments {
    let coding = coding(text);
    let units = units(text, coding);
    let (single, per_part) = limits(coding);
    let count = if units <= single { 1 } else { pack(text, coding, per_part, |_| {}) };
    Segments { coding, units, count }
}

/// The parts a concatenated SMS carries, in order; one part when the text
/// fits a single message. An escape sequence or a surrogate pair is never
/// split (such a part may hold one unit less). The parts concatenate back to
/// the text, and there are exactly `segments(text).count` of them.
pub fn split(text: &str) -> Vec<&str> {
    let coding = coding(text);
    let (single, per_part) = limits(coding);
    if units(text, coding) <= single {
        return vec![text];
    }
    let mut cuts = Vec::new();
    pack(text, coding, per_part, |i| cuts.push(i));
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for c in cuts {
        parts.push(&text[from..c]);
        from = c;
    }
    parts.push(&text[from..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_gsm_and_splits_at_160_then_153() {
        let s = "a".repeat(160);
        assert_eq!(segments(&s), Segments { coding: Coding::Gsm7, units: 160, count: 1 });
        let s = "a".repeat(161);
        assert_eq!(segments(&s).count, 2);
        assert_eq!(split(&s).iter().map(|p| p.len()).collect::<Vec<_>>(), [153, 8]);
        assert_eq!(segments("").count, 1);
    }

    #[test]
    fn extension_characters_take_two_septets_and_stay_whole() {
        assert_eq!(segments("€"), Segments { coding: Coding::Gsm7, units: 2, count: 1 });
        assert_eq!(segments(&"€".repeat(80)).count, 1, "160 septets");
        let s = "€".repeat(81); // 162 septets: 76 € (152) fit a part, the 77th would need 154.
        let parts = split(&s);
        assert_eq!(parts.len(), 2);
        assert_eq!(units(parts[0], Coding::Gsm7), 152, "the escape pair moved to the next part");
        assert_eq!(parts.concat(), s);
    }

    #[test]
    fn accents_outside_the_gsm_table_need_ucs2() {
        // é, ñ, ü are in the GSM table; á, í, ó, ú and the em dash are not.
        assert_eq!(coding("Tiene datos ilimitados. Señal: é ñ ü"), Coding::Gsm7);
        assert_eq!(coding("Avería"), Coding::Ucs2, "í");
        assert_eq!(coding("zona — ñ"), Coding::Ucs2, "em dash");
        assert_eq!(segments("Авария"), Segments { coding: Coding::Ucs2, units: 6, count: 1 });
        assert_eq!(segments(&"я".repeat(70)).count, 1);
        let s = "я".repeat(71);
        assert_eq!(segments(&s).count, 2);
        assert_eq!(split(&s).iter().map(|p| p.chars().count()).collect::<Vec<_>>(), [67, 4]);
    }

    #[test]
    fn a_surrogate_pair_is_never_split() {
        assert_eq!(units("😀", Coding::Ucs2), 2);
        // 66 units of Cyrillic, then an emoji (2 units) would make 68 > 67.
        let s = format!("{}😀{}", "я".repeat(66), "я".repeat(10));
        let parts = split(&s);
        assert_eq!(units(parts[0], Coding::Ucs2), 66);
        assert!(parts[1].starts_with('😀'));
        assert_eq!(parts.concat(), s);
        assert_eq!(parts.len(), segments(&s).count);
    }

    fn alphabet() -> impl Strategy<Value = String> {
        let chars =
            prop::sample::select(vec!['a', 'Z', '7', ' ', '.', '€', '[', '^', 'é', 'ñ', 'á', 'ó', 'я', 'Ж', '😀', '—']);
        prop::collection::vec(chars, 0..500).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn parts_rebuild_the_text_and_respect_the_budgets(text in alphabet()) {
            let parts = split(&text);
            let seg = segments(&text);
            prop_assert_eq!(parts.concat(), text.clone());
            prop_assert_eq!(parts.len(), seg.count);
            let (single, per_part) = limits(seg.coding);
            for p in &parts {
                let u = units(p, seg.coding);
                prop_assert!(u <= if seg.count == 1 { single } else { per_part }, "{} units", u);
                if seg.coding == Coding::Gsm7 {
                    prop_assert_eq!(coding(p), Coding::Gsm7);
                }
            }
            prop_assert_eq!(seg.units, parts.iter().map(|p| units(p, seg.coding)).sum::<usize>());
        }
    }
}
