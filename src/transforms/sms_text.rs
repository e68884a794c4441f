//! SMS text encoding for outbound customer notices: GSM 03.38 7-bit default
//! alphabet vs UCS-2 detection, counting, and segmentation. Pure, no I/O.

use serde::Serialize;

/// How a text goes on the air; decides both the unit being counted and the
/// per-message budgets, so operators see why a notice costs what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coding {
    /// GSM 03.38 default alphabet (basic + extension table), one septet per
    /// char, two for an extension char (ESC + char).
    Gsm7,
    /// 16-bit units; gateways call it UCS-2 but carry UTF-16, so a char
    /// outside the BMP takes a surrogate pair.
    Ucs2,
}

/// (single-message limit, per-part limit once a concatenation UDH is needed),
/// in units of the coding.
const fn limits(c: Coding) -> (usize, usize) {
    match c {
        Coding::Gsm7 => (160, 153),
        Coding::Ucs2 => (70, 67),
    }
}

/// Septets a char takes in GSM-7: 1 in the basic table, 2 in the extension
/// table (escape + char), `None` if the alphabet cannot carry it.
#[inline]
fn gsm_septets(ch: char) -> Option<usize> {
    match ch {
        // Basic table, in table order (0x1B is ESC, not a text char).
        '@' | '£' | '$' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | '\n' | 'Ø' | 'ø' | '\r' | 'Å' | 'å' => {
            Some(1)
        }
        'Δ' | '_' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' => {
            Some(1)
        }
        ' ' | '!' | '"' | '#' | '¤' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/' => Some(1),
        '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' => Some(1),
        '¡' | 'A'..='Z' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' => Some(1),
        '¿' | 'a'..='z' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        // Extension table: ESC + char.
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Units `ch` takes in `coding`. A char GSM-7 cannot carry counts 1 there;
/// that only happens if a caller asks for GSM-7 units of a UCS-2 text.
#[inline]
fn char_units(ch: char, coding: Coding) -> usize {
    match coding {
        Coding::Gsm7 => gsm_septets(ch).unwrap_or(1),
        Coding::Ucs2 => ch.len_utf16(),
    }
}

/// The coding a text needs: `Gsm7` iff every char is in the GSM 03.38 basic
/// or extension table, else `Ucs2`. One non-GSM char (an `á`, an em dash)
/// flips the whole message to UCS-2 and cuts its budget from 160 to 70.
pub fn coding(text: &str) -> Coding {
    if text.chars().all(|c| gsm_septets(c).is_some()) {
        Coding::Gsm7
    } else {
        Coding::Ucs2
    }
}

/// Length in the coding's units: GSM-7 septets (extension chars count 2) or
/// UCS-2 16-bit code units (a char outside the BMP counts 2, a surrogate
/// pair). This, not `chars().count()`, is what the SMSC budgets against.
pub fn units(text: &str, coding: Coding) -> usize {
    text.chars().map(|c| char_units(c, coding)).sum()
}

/// What a text costs to send: reported per notice so template authors and
/// billing see coding, size and parts without re-deriving them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segments {
    /// The coding the text needs (see [`coding`]).
    pub coding: Coding,
    /// Units in the whole text, in that coding (see [`units`]).
    pub units: usize,
    /// Parts on the air; 1 for an empty text; always `split(text).len()`.
    pub count: usize,
}

/// Greedy packing into parts of at most `per_part` units, never splitting a
/// char (so never an ESC pair or a surrogate pair); calls `cut` with the
/// byte offset where each new part starts and returns the number of parts.
/// Both [`segments`] and [`split`] go through here so they cannot disagree.
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

/// Segments a text takes: a single message up to 160 septets / 70 UCS-2
/// units; otherwise concatenated with a UDH at 153 septets / 67 units per
/// part, counted by the same greedy packing [`split`] uses. Empty text = 1.
/// Allocation-free, so it can run per message on the hot path.
pub fn segments(text: &str) -> Segments {
    let coding = coding(text);
    let units = units(text, coding);
    let (single, per_part) = limits(coding);
    let count = if units <= single { 1 } else { pack(text, coding, per_part, |_| {}) };
    Segments { coding, units, count }
}

/// The parts a concatenated SMS carries, in order; one part when the text
/// fits a single message. A GSM escape (extension char) or a surrogate pair
/// is never split, so such a part may hold one unit less (152 / 66). The
/// parts concatenate back to the text and there are exactly
/// `segments(text).count` of them.
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

    /// The GSM 03.38 basic table without ESC (0x1B): 127 chars.
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{0C}^{}\\[~]|€";

    #[test]
    fn the_whole_basic_table_is_one_septet_and_the_extension_two() {
        assert_eq!(BASIC.chars().count(), 127);
        for c in BASIC.chars() {
            assert_eq!(gsm_septets(c), Some(1), "{c:?}");
        }
        assert_eq!(EXTENSION.chars().count(), 10);
        for c in EXTENSION.chars() {
            assert_eq!(gsm_septets(c), Some(2), "{c:?}");
        }
        assert_eq!(segments(BASIC), Segments { coding: Coding::Gsm7, units: 127, count: 1 });
        assert_eq!(units(EXTENSION, Coding::Gsm7), 20);
        // Look-alikes that are not in the alphabet.
        for c in ['`', 'á', 'í', 'ó', 'ú', 'ç', 'Ã', '—', '–', '’', '“', '\t', 'Е'] {
            assert_eq!(gsm_septets(c), None, "{c:?}");
        }
    }

    #[test]
    fn plain_text_is_gsm_and_splits_at_160_then_153() {
        let s = "a".repeat(160);
        assert_eq!(segments(&s), Segments { coding: Coding::Gsm7, units: 160, count: 1 });
        assert_eq!(split(&s), [s.as_str()]);
        let s = "a".repeat(161);
        assert_eq!(segments(&s), Segments { coding: Coding::Gsm7, units: 161, count: 2 });
        assert_eq!(split(&s).iter().map(|p| p.len()).collect::<Vec<_>>(), [153, 8]);
    }

    #[test]
    fn empty_text_is_one_gsm_segment() {
        assert_eq!(segments(""), Segments { coding: Coding::Gsm7, units: 0, count: 1 });
        assert_eq!(split(""), [""]);
    }

    #[test]
    fn extension_characters_take_two_septets_and_stay_whole() {
        assert_eq!(segments("€"), Segments { coding: Coding::Gsm7, units: 2, count: 1 });
        assert_eq!(segments(&"€".repeat(80)), Segments { coding: Coding::Gsm7, units: 160, count: 1 });
        // 162 septets: 76 € (152) fill the first part, the 77th would need 154.
        let s = "€".repeat(81);
        assert_eq!(segments(&s), Segments { coding: Coding::Gsm7, units: 162, count: 2 });
        let parts = split(&s);
        assert_eq!(parts.len(), 2);
        let first = units(parts[0], Coding::Gsm7);
        assert!(first <= 153);
        assert_eq!(first, 152, "the ESC pair moved to the next part whole");
        assert!(s.is_char_boundary(parts[0].len()));
        assert!(parts[0].ends_with('€') && parts[1].starts_with('€'));
        assert_eq!(parts.concat(), s);
    }

    #[test]
    fn an_escape_pair_that_would_straddle_153_moves_to_the_next_part() {
        // 152 septets, then '[' (ESC + '[') would end on septet 154.
        let s = format!("{}[{}", "a".repeat(152), "b".repeat(10));
        let parts = split(&s);
        assert_eq!(parts, [&s[..152], &s[152..]]);
        assert!(parts[1].starts_with('['));
        assert_eq!(segments(&s).count, 2);
    }

    #[test]
    fn spanish_em_dash_forces_ucs2() {
        // The em dash is not in GSM 03.38 (and neither is the í of "Avería");
        // either one alone makes the whole message UCS-2.
        assert_eq!(coding("Avería en su zona — ñ"), Coding::Ucs2);
        assert_eq!(coding("Averia en su zona — ñ"), Coding::Ucs2, "the em dash alone");
        assert_eq!(coding("Averia en su zona - ñ"), Coding::Gsm7, "ASCII hyphen and ñ are GSM");
        assert_eq!(units("Avería en su zona — ñ", Coding::Ucs2), 21);
    }

    #[test]
    fn a_acute_is_not_gsm_but_n_tilde_and_e_acute_are() {
        // GSM has à é è ù ì ò Ç É and Ä Ö Ñ Ü ä ö ñ ü, but not á.
        assert_eq!(coding("ñé"), Coding::Gsm7);
        assert_eq!(segments("ñáé"), Segments { coding: Coding::Ucs2, units: 3, count: 1 });
    }

    #[test]
    fn cyrillic_is_ucs2_and_splits_at_70_then_67() {
        assert_eq!(segments("Авария"), Segments { coding: Coding::Ucs2, units: 6, count: 1 });
        assert_eq!(segments(&"я".repeat(70)), Segments { coding: Coding::Ucs2, units: 70, count: 1 });
        let s = "я".repeat(71);
        assert_eq!(segments(&s), Segments { coding: Coding::Ucs2, units: 71, count: 2 });
        assert_eq!(split(&s).iter().map(|p| p.chars().count()).collect::<Vec<_>>(), [67, 4]);
    }

    #[test]
    fn an_emoji_is_a_surrogate_pair() {
        assert_eq!(units("😀", Coding::Ucs2), 2);
        assert_eq!(segments("😀"), Segments { coding: Coding::Ucs2, units: 2, count: 1 });
        assert_eq!(segments(&"😀".repeat(35)).count, 1);
        assert_eq!(segments(&"😀".repeat(36)).count, 2);
    }

    #[test]
    fn a_surrogate_pair_that_would_straddle_67_moves_to_the_next_part() {
        // 66 units of Cyrillic; the emoji would take units 67 and 68.
        let s = format!("{}😀{}", "я".repeat(66), "я".repeat(10));
        let parts = split(&s);
        assert_eq!(parts.len(), 2);
        assert_eq!(units(parts[0], Coding::Ucs2), 66);
        assert!(parts[1].starts_with('😀'));
        assert_eq!(units(parts[1], Coding::Ucs2), 12);
        assert_eq!(parts.concat(), s);
        assert_eq!(parts.len(), segments(&s).count);
    }

    fn gsm_only() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'Z', '7', ' ', '.', '\n', '@', 'é', 'ñ', 'Ñ', 'à', 'Δ', '€', '[', ']', '^', '{', '}', '\\', '~', '|',
            '\u{0C}',
        ]);
        prop::collection::vec(chars, 0..600).prop_map(|v| v.into_iter().collect())
    }

    fn mixed() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'Z', '7', ' ', '.', '€', '[', '^', '|', 'é', 'ñ', 'á', 'ó', 'í', '—', 'я', 'Ж', 'ё', '😀', '🔌',
        ]);
        prop::collection::vec(chars, 0..300).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn parts_rebuild_the_text_and_respect_the_budgets(text in prop_oneof![gsm_only(), mixed()]) {
            let parts = split(&text);
            let seg = segments(&text);
            prop_assert_eq!(seg.coding, coding(&text));
            prop_assert_eq!(parts.concat(), text.clone());
            prop_assert_eq!(parts.len(), seg.count);
            let (single, per_part) = limits(seg.coding);
            let budget = if seg.count == 1 { single } else { per_part };
            for (k, p) in parts.iter().enumerate() {
                let u = units(p, seg.coding);
                prop_assert!(u <= budget, "part {} has {} units > {}", k, u, budget);
                if seg.coding == Coding::Gsm7 {
                    prop_assert_eq!(coding(p), Coding::Gsm7);
                }
                if seg.count > 1 {
                    prop_assert!(!p.is_empty());
                }
                // Greedy: a non-last part could not take the next char.
                if let Some(next) = parts.get(k + 1).and_then(|n| n.chars().next()) {
                    prop_assert!(u + char_units(next, seg.coding) > per_part);
                }
            }
            prop_assert_eq!(seg.units, parts.iter().map(|p| units(p, seg.coding)).sum::<usize>());
        }
    }
}
