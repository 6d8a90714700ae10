//! How many SMS segments a body costs: what a provider bills, per segment, for one message.
//!
//! An SMS carries 140 bytes. A body made only of the GSM 03.38 alphabet (GSM-7) packs 7 bits
//! per character: 160 characters fit in one message; characters of the extension table
//! (`€ [ ] { } \ ^ ~ |` and form feed) take two (an escape and the character). Any other
//! character sends the whole body as UCS-2, 16 bits per UTF-16 code unit: 70 units fit, and a
//! character outside the Basic Multilingual Plane (most emoji) is a surrogate pair, two units.
//! A longer body is split into concatenated segments, each of which gives 6 bytes to the
//! concatenation header: 153 septets or 67 units per segment. A segment never ends between
//! the two halves of an escape or of a surrogate pair (phones would show garbage), so a pair
//! that would straddle the boundary starts the next segment and the previous one carries one
//! unit less.
//!
//! Providers that substitute look-alike characters ("smart encoding") or transliterate may
//! bill less; counting as the standard says errs on the side of the budget.

/// How a body is encoded on the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// A body's encoding, its length in that encoding's units (septets or UTF-16 code units) and
/// the segments it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    pub units: usize,
    pub count: u32,
}

/// Septets of one message alone, and of each part of a concatenated one.
const GSM7_SINGLE: usize = 160;
const GSM7_PART: usize = 153;
/// UTF-16 code units of one message alone, and of each part of a concatenated one.
const UCS2_SINGLE: usize = 70;
const UCS2_PART: usize = 67;

/// The GSM 03.38 basic character set (one septet each), in table order, without the escape
/// (0x1B), which only introduces an extension character.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table reached through the escape (two septets each).
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets `c` takes in GSM-7: 1 (basic set), 2 (extension table), or `None` (needs UCS-2).
fn gsm7_septets(c: char) -> Option<usize> {
    // ASCII letters, digits and space are by far the most common: answer them without a scan.
    if c.is_ascii_alphanumeric() || c == ' ' {
        return Some(1);
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segments of `body` as a provider bills it; an empty body is one (empty) message.
pub fn segments(body: &str) -> Segments {
    let septets: Option<Vec<usize>> = body.chars().map(gsm7_septets).collect();
    let (encoding, widths): (Encoding, Vec<usize>) = match septets {
        Some(widths) => (Encoding::Gsm7, widths),
        None => (Encoding::Ucs2, body.chars().map(char::len_utf16).collect()),
    };
    let (single, part) = match encoding {
        Encoding::Gsm7 => (GSM7_SINGLE, GSM7_PART),
        Encoding::Ucs2 => (UCS2_SINGLE, UCS2_PART),
    };
    let units: usize = widths.iter().sum();
    if units <= single {
        return Segments { encoding, units, count: 1 };
    }
    // Fill parts greedily; a character that does not fit whole starts the next part.
    let (mut count, mut used) = (1u32, 0usize);
    for width in widths {
        if used + width > part {
            count += 1;
            used = 0;
        }
        used += width;
    }
    Segments { encoding, units, count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(body: &str) -> u32 {
        segments(body).count
    }

    #[test]
    fn gsm7_fits_160_septets_in_one_and_153_per_part_after() {
        assert_eq!(segments(""), Segments { encoding: Encoding::Gsm7, units: 0, count: 1 });
        assert_eq!(count(&"a".repeat(160)), 1);
        assert_eq!(count(&"a".repeat(161)), 2);
        for k in 2..=5 {
            assert_eq!(count(&"a".repeat(153 * k)), k as u32, "{k} full parts");
            assert_eq!(count(&"a".repeat(153 * k + 1)), k as u32 + 1, "one septet over {k} parts");
        }
        let accents = "é".repeat(160);
        assert_eq!(segments(&accents), Segments { encoding: Encoding::Gsm7, units: 160, count: 1 }, "é is GSM-7");
    }

    #[test]
    fn extension_characters_take_two_septets_and_never_straddle_a_part() {
        assert_eq!(segments("€"), Segments { encoding: Encoding::Gsm7, units: 2, count: 1 });
        assert_eq!(count(&format!("{}€", "a".repeat(158))), 1, "158 + 2 = 160");
        assert_eq!(count(&format!("{}€", "a".repeat(159))), 2, "159 + 2 = 161");
        // An escape pair at septets 153–154 of the body: moved whole to the second part.
        let straddling = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(segments(&straddling).units, 306, "exactly two parts' worth of septets…");
        assert_eq!(count(&straddling), 3, "…but the pair cannot be split, so it takes three");
        let aligned = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(count(&aligned), 2, "the pair ends the first part exactly");
        for c in ['^', '{', '}', '\\', '[', '~', ']', '|', '\u{c}'] {
            assert_eq!(segments(&c.to_string()).units, 2, "{c:?}");
        }
    }

    #[test]
    fn ucs2_fits_70_units_in_one_and_67_per_part_after() {
        let cyrillic = "д";
        assert_eq!(segments(&cyrillic.repeat(70)), Segments { encoding: Encoding::Ucs2, units: 70, count: 1 });
        assert_eq!(count(&cyrillic.repeat(71)), 2);
        assert_eq!(count(&cyrillic.repeat(67 * 3)), 3);
        assert_eq!(count(&cyrillic.repeat(67 * 3 + 1)), 4);
        // One character outside GSM-7 sends the whole body as UCS-2: 100 Latin letters and a
        // Cyrillic one are 101 units, two parts, where 101 GSM-7 letters would be one.
        assert_eq!(count(&format!("{}д", "a".repeat(100))), 2);
        assert_eq!(count(&"a".repeat(101)), 1);
    }

    #[test]
    fn an_emoji_is_two_units_and_never_straddles_a_part() {
        assert_eq!(segments("😀"), Segments { encoding: Encoding::Ucs2, units: 2, count: 1 });
        assert_eq!(count(&format!("{}😀", "д".repeat(68))), 1, "68 + 2 = 70");
        assert_eq!(count(&format!("{}😀", "д".repeat(69))), 2, "69 + 2 = 71");
        // A surrogate pair at units 67–68: moved whole to the second part.
        let straddling = format!("{}😀{}", "д".repeat(66), "д".repeat(66));
        assert_eq!(segments(&straddling).units, 134);
        assert_eq!(count(&straddling), 3);
        let aligned = format!("{}😀{}", "д".repeat(65), "д".repeat(67));
        assert_eq!(count(&aligned), 2);
    }

    #[test]
    fn the_shipped_templates_are_one_gsm7_segment() {
        let body = "Your Acme verification code is 123456. It expires in 10 minutes. Never share it.";
        assert_eq!(segments(body).encoding, Encoding::Gsm7);
        assert_eq!(count(body), 1);
        // Curly quotes are not GSM-7: a copy-pasted apostrophe halves what fits.
        assert_eq!(segments("Don’t share it").encoding, Encoding::Ucs2);
    }
}
