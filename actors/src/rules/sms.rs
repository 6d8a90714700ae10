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
//!
//! # The spend budget
//!
//! A send costs `segments × price`, the price of one segment to the destination's country
//! calling code ([`SpendPolicy::price`]: the configured price, else [`SHIPPED_PRICES`], else
//! the default). Money is counted in [`Money`] units (1/10 000 of the price list's currency)
//! so that every limiter adds integers. [`SpendPolicy`] caps what may be spent per UTC day,
//! in total and per country; the limiter counts every send it lets through, with or without
//! an account behind the identifier (a send without one costs nothing, but counting it is what
//! keeps a spent budget from telling the two apart), and refuses a send whose cost would go
//! past a budget with `sms_budget_exhausted` until the day ends (`rules::limits`).

use crate::rules::clock::Timestamp;

/// Money, in units of 1/10 000 of the price list's currency (USD in [`SHIPPED_PRICES`]).
pub type Money = u64;

/// [`Money`] units in one unit of currency.
pub const MONEY_UNITS: u64 = 10_000;

/// Prices of one SMS segment by country calling code, in [`Money`] units: the order of
/// magnitude of public list prices (USD, late 2025), rounded up. A rough guide, never a quote:
/// set your contract's with `limits.sms_budget.prices`. `+1` covers every NANP country,
/// Caribbean ones included.
pub const SHIPPED_PRICES: &[(u16, Money)] = &[
    (1, 100),   // US, Canada and the rest of NANP
    (7, 5_500), // Russia, Kazakhstan
    (31, 1_100),
    (33, 800),
    (34, 800),
    (39, 900),
    (44, 500),
    (49, 1_100),
    (52, 700),
    (55, 600),
    (61, 600),
    (62, 4_500),
    (63, 2_200),
    (81, 800),
    (86, 500),
    (91, 900),
    (234, 3_200),
    (880, 3_800),
];

/// The price of a segment to a country no table names: high, because that is what the
/// countries SMS pumping favours cost.
pub const DEFAULT_PRICE: Money = 1_000;

/// The default daily budget for every SMS together: 100 (units of the price list's currency),
/// about 12,000 one-segment codes a day to `+1` numbers, 1,000 to countries priced at the
/// default: generous for a small app, a fuse for a large one, which sets its own.
pub const DEFAULT_DAILY_BUDGET: Money = 100 * MONEY_UNITS;

/// How much SMS may cost per UTC day, and what each segment costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendPolicy {
    /// Every SMS together, across every node (0: no such budget).
    pub daily: Money,
    /// Each country on its own, unless `countries` names it (0: no such budget).
    pub country_daily: Money,
    /// Budgets of particular countries, by calling code (0 turns a country's budget off).
    pub countries: Vec<(u16, Money)>,
    /// Prices of a segment by calling code, before [`SHIPPED_PRICES`].
    pub prices: Vec<(u16, Money)>,
    /// Price of a segment to a country neither table names.
    pub default_price: Money,
}

impl SpendPolicy {
    /// No budget at all.
    pub const OFF: SpendPolicy = SpendPolicy {
        daily: 0,
        country_daily: 0,
        countries: Vec::new(),
        prices: Vec::new(),
        default_price: DEFAULT_PRICE,
    };

    /// The price of one segment to `country`.
    pub fn price(&self, country: u16) -> Money {
        let find = |table: &[(u16, Money)]| table.iter().find(|(c, _)| *c == country).map(|(_, p)| *p);
        find(&self.prices).or_else(|| find(SHIPPED_PRICES)).unwrap_or(self.default_price)
    }

    /// What a message of `segments` segments to `country` costs (at least one segment).
    pub fn cost(&self, country: u16, segments: u32) -> Money {
        self.price(country).saturating_mul(u64::from(segments.max(1)))
    }

    /// The daily budget of `country` (0: none).
    pub fn country_budget(&self, country: u16) -> Money {
        self.countries.iter().find(|(c, _)| *c == country).map_or(self.country_daily, |(_, b)| *b)
    }
}

impl Default for SpendPolicy {
    fn default() -> Self {
        SpendPolicy { daily: DEFAULT_DAILY_BUDGET, ..SpendPolicy::OFF }
    }
}

/// The end of the UTC day `now` falls in: when a daily budget starts again.
pub fn day_end(now: Timestamp) -> Timestamp {
    const DAY: u64 = 86_400_000;
    Timestamp::from_millis((now.as_millis() / DAY + 1) * DAY)
}

/// `money` as a decimal amount of currency (`12.3456`), for logs and documentation.
pub fn format_money(money: Money) -> String {
    let text = format!("{}.{:04}", money / MONEY_UNITS, money % MONEY_UNITS);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The most segments an SMS of each kind takes with the configured templates (computed once,
/// at start, from the longest body each renders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmsSegments {
    pub register: u32,
    pub login: u32,
    pub resend: u32,
}

impl Default for SmsSegments {
    fn default() -> Self {
        SmsSegments { register: 1, login: 1, resend: 1 }
    }
}

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
    fn a_send_costs_its_segments_at_its_countrys_price() {
        let policy = SpendPolicy { prices: vec![(44, 420)], default_price: 2_000, ..SpendPolicy::default() };
        assert_eq!(policy.price(1), 100, "shipped");
        assert_eq!(policy.price(44), 420, "configured over shipped");
        assert_eq!(policy.price(999), 2_000, "default");
        assert_eq!(policy.cost(1, 3), 300);
        assert_eq!(policy.cost(1, 0), 100, "at least one segment");
        let budgets = SpendPolicy { country_daily: 5, countries: vec![(44, 9), (33, 0)], ..SpendPolicy::OFF };
        assert_eq!((budgets.country_budget(1), budgets.country_budget(44), budgets.country_budget(33)), (5, 9, 0));
        assert_eq!(format_money(DEFAULT_DAILY_BUDGET), "100");
        assert_eq!(format_money(83), "0.0083");
        assert_eq!(format_money(12_500), "1.25");
    }

    #[test]
    fn a_day_ends_at_utc_midnight() {
        let midnight = 1_790_035_200_000; // 2026-09-22T00:00:00Z
        assert_eq!(day_end(Timestamp::from_millis(midnight)), Timestamp::from_millis(midnight + 86_400_000));
        assert_eq!(day_end(Timestamp::from_millis(midnight - 1)), Timestamp::from_millis(midnight));
        assert_eq!(day_end(Timestamp::from_millis(midnight + 86_399_999)).as_millis(), midnight + 86_400_000);
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
