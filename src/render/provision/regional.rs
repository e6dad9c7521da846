//! Time zones and languages as each vendor spells them. Every [`TimeZone`] is a UTC offset and
//! one of three daylight-saving rules; the vendors that take explicit rules (Cisco 7940/7960,
//! Yealink, Polycom, Snom) get them spelled out, Cisco's XML format gets its own zone name.

use crate::crd::{Locale, TimeZone};

/// When clocks go forward or back: the `week`-th Sunday (5 = the last) of `month`, at `hour`
/// local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transition {
    pub month: u8,
    pub week: u8,
    pub hour: u8,
}

/// A zone's offset and daylight-saving transitions (`None`: no daylight saving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Zone {
    /// Offset of standard time from UTC, in minutes.
    pub offset_minutes: i32,
    /// Start and end of daylight saving (one hour ahead), in local time.
    pub dst: Option<(Transition, Transition)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    None,
    /// EU: last Sunday of March 01:00 UTC to last Sunday of October 01:00 UTC.
    Eu,
    /// US/Canada: second Sunday of March 02:00 to first Sunday of November 02:00, local.
    Us,
}

fn offset_and_rule(tz: TimeZone) -> (i32, Rule) {
    use TimeZone::*;
    match tz {
        Utc => (0, Rule::None),
        EuropeLondon | EuropeDublin | EuropeLisbon => (0, Rule::Eu),
        EuropeAmsterdam | EuropeBerlin | EuropeBrussels | EuropeCopenhagen | EuropeMadrid | EuropeOslo
        | EuropeParis | EuropePrague | EuropeRome | EuropeStockholm | EuropeVienna | EuropeWarsaw
        | EuropeZurich => (60, Rule::Eu),
        EuropeAthens | EuropeBucharest | EuropeHelsinki => (120, Rule::Eu),
        AmericaNewYork | AmericaToronto => (-300, Rule::Us),
        AmericaChicago => (-360, Rule::Us),
        AmericaDenver => (-420, Rule::Us),
        AmericaPhoenix => (-420, Rule::None),
        AmericaLosAngeles | AmericaVancouver => (-480, Rule::Us),
        AsiaKolkata => (330, Rule::None),
        AsiaTokyo => (540, Rule::None),
    }
}

/// The zone's offset and transitions.
pub(super) fn zone(tz: TimeZone) -> Zone {
    let (offset_minutes, rule) = offset_and_rule(tz);
    let dst = match rule {
        Rule::None => None,
        Rule::Eu => {
            // 01:00 UTC is 01:00 + offset in standard time, one hour later in summer time.
            let start = (60 + offset_minutes) / 60;
            Some((
                Transition { month: 3, week: 5, hour: start as u8 },
                Transition { month: 10, week: 5, hour: (start + 1) as u8 },
            ))
        }
        Rule::Us => {
            Some((Transition { month: 3, week: 2, hour: 2 }, Transition { month: 11, week: 1, hour: 2 }))
        }
    };
    Zone { offset_minutes, dst }
}

/// The zone as Cisco's SEP XML (`<timeZone>`) names it.
pub(super) fn cisco_xml_zone(tz: TimeZone) -> &'static str {
    match offset_and_rule(tz) {
        (0, Rule::None) => "Greenwich Standard Time",
        (0, _) => "GMT Standard/Daylight Time",
        (60, _) => "W. Europe Standard/Daylight Time",
        (120, _) => "E. Europe Standard/Daylight Time",
        (-300, _) => "Eastern Standard/Daylight Time",
        (-360, _) => "Central Standard/Daylight Time",
        (-420, Rule::None) => "US Mountain Standard Time",
        (-420, _) => "Mountain Standard/Daylight Time",
        (-480, _) => "Pacific Standard/Daylight Time",
        (330, _) => "India Standard Time",
        (540, _) => "Tokyo Standard Time",
        (offset, _) => unreachable!("no Cisco zone name for UTC offset {offset} min: add it with the zone"),
    }
}

/// The zone abbreviation Cisco 7940/7960 SIP firmware takes in `time_zone`.
pub(super) fn cisco_text_zone(tz: TimeZone) -> &'static str {
    match offset_and_rule(tz).0 {
        0 => "GMT",
        60 => "CET",
        120 => "EET",
        -300 => "EST",
        -360 => "CST",
        -420 => "MST",
        -480 => "PST",
        330 => "IST",
        540 => "JST",
        offset => unreachable!("no Cisco 79x0 zone for UTC offset {offset} min: add it with the zone"),
    }
}

/// A language as each vendor names it.
pub(super) struct Language {
    /// Cisco `userLocale` name, e.g. `German_Germany` (also Polycom's `lcl.ml.lang`).
    pub cisco_user: &'static str,
    /// Cisco `langCode`, e.g. `de_DE`.
    pub code: &'static str,
    /// Cisco `networkLocale` (tones), e.g. `Germany`.
    pub cisco_network: &'static str,
    /// Yealink `lang.gui`/`lang.wui`.
    pub yealink: &'static str,
    /// Snom `language`/`web_language`.
    pub snom: &'static str,
    /// Snom `tone_scheme`.
    pub snom_tones: &'static str,
    /// Day before month in dates (everyone but the US).
    pub day_first: bool,
}

pub(super) fn language(locale: Locale) -> Language {
    let l = |cisco_user, code, cisco_network, yealink, snom, snom_tones, day_first| Language {
        cisco_user,
        code,
        cisco_network,
        yealink,
        snom,
        snom_tones,
        day_first,
    };
    match locale {
        Locale::EnUs => {
            l("English_United_States", "en_US", "United_States", "English", "English", "USA", false)
        }
        Locale::EnGb => {
            l("English_United_Kingdom", "en_GB", "United_Kingdom", "English", "English", "GBR", true)
        }
        Locale::DeDe => l("German_Germany", "de_DE", "Germany", "German", "Deutsch", "GER", true),
        Locale::FrFr => l("French_France", "fr_FR", "France", "French", "Francais", "FRA", true),
        Locale::EsEs => l("Spanish_Spain", "es_ES", "Spain", "Spanish", "Espanol", "ESP", true),
        Locale::ItIt => l("Italian_Italy", "it_IT", "Italy", "Italian", "Italiano", "ITA", true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu_transitions_follow_utc_and_us_ones_local_time() {
        let berlin = zone(TimeZone::EuropeBerlin);
        assert_eq!(berlin.offset_minutes, 60);
        let (start, end) = berlin.dst.unwrap();
        assert_eq!((start.month, start.week, start.hour, end.month, end.week, end.hour), (3, 5, 2, 10, 5, 3));
        let (start, end) = zone(TimeZone::EuropeLondon).dst.unwrap();
        assert_eq!((start.hour, end.hour), (1, 2));
        let (start, end) = zone(TimeZone::EuropeHelsinki).dst.unwrap();
        assert_eq!((start.hour, end.hour), (3, 4));
        let (start, end) = zone(TimeZone::AmericaChicago).dst.unwrap();
        assert_eq!((start.month, start.week, end.month, end.week), (3, 2, 11, 1));
        assert_eq!(zone(TimeZone::AmericaPhoenix).dst, None);
        assert_eq!(zone(TimeZone::AsiaKolkata).offset_minutes, 330);
    }

    #[test]
    fn every_zone_has_every_vendors_name() {
        // Every value the CRD schema allows.
        let schema = serde_json::to_value(schemars::schema_for!(TimeZone)).unwrap();
        let mut names = Vec::new();
        collect_consts(&schema, &mut names);
        let all: Vec<TimeZone> = names.iter().map(|n| serde_json::from_value(n.clone()).unwrap()).collect();
        assert_eq!(all.len(), 29, "{names:?}");
        for tz in all {
            assert!(!cisco_xml_zone(tz).is_empty());
            assert!(!cisco_text_zone(tz).is_empty());
        }
    }

    fn collect_consts(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("const", s @ serde_json::Value::String(_)) => out.push(s.clone()),
                        ("enum", serde_json::Value::Array(items)) => out.extend(items.iter().cloned()),
                        _ => collect_consts(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect_consts(i, out)),
            _ => {}
        }
    }
}
