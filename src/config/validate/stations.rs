//! Validation of the plant calendar (`gateway.time_zone`, `[[shift]]`) and of
//! `[[station]]` tables: scan rules, `[station.lot]` and `[station.operator]`,
//! including the cross-checks between them (a per-shift reset needs shifts,
//! a lot target needs a counter of the station, …).

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::model::*;
use super::super::raw::{LotRaw, OperatorRaw, ScanRuleRaw, ShiftRaw, StationRaw};
use super::{Result, Validator, regex_reason};
use crate::numbering::Fields;

/// Longest lot number GS1 AI 10 can carry.
const GS1_LOT_MAX: usize = 20;

impl Validator<'_> {
    pub(super) fn calendar(
        &self,
        tz: Option<&Spanned<String>>,
        shifts: &[Spanned<ShiftRaw>],
    ) -> Result<Calendar> {
        let mut plan = Vec::with_capacity(shifts.len());
        for (i, sh) in shifts.iter().enumerate() {
            let sh = sh.get_ref();
            let key = format!("shift[{i}]");
            let name = sh.name.get_ref();
            if name.is_empty() || name.len() > 8 || !name.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(self.err(
                    sh.name.span(),
                    &format!("{key}.name"),
                    format!("\"{name}\" is not a shift name"),
                ));
            }
            let start_minute = parse_hhmm(sh.start.get_ref()).ok_or_else(|| {
                self.err(
                    sh.start.span(),
                    &format!("{key}.start"),
                    format!("\"{}\" is not a time of day", sh.start.get_ref()),
                )
            })?;
            plan.push(Shift {
                name: name.clone(),
                start_minute,
            });
        }
        self.unique(
            shifts
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.get_ref().name, format!("shift[{i}].name"))),
            "shift name",
        )?;
        self.unique(
            shifts
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.get_ref().start, format!("shift[{i}].start"))),
            "shift start",
        )?;
        let zone = tz.map_or("UTC", |t| t.get_ref().as_str());
        Calendar::new(zone, plan).map_err(|why| match tz {
            Some(t) => self.err(t.span(), "gateway.time_zone", why),
            None => self.err_plain(0..0, "shift", why),
        })
    }

    pub(super) fn station(
        &self,
        index: usize,
        s: &StationRaw,
        gateway: &GatewayConfig,
        calendar: &Calendar,
    ) -> Result<StationConfig> {
        let id = self.id(&s.id, &format!("station[{index}].id"))?;
        let scan_rules = s
            .scan_rule
            .iter()
            .enumerate()
            .map(|(i, r)| self.scan_rule(&format!("station[{index}].scan_rule[{i}]"), r))
            .collect::<Result<Vec<_>>>()?;
        self.unique(
            s.scan_rule.iter().enumerate().map(|(i, r)| {
                (
                    &r.get_ref().name,
                    format!("station[{index}].scan_rule[{i}].name"),
                )
            }),
            "rule name",
        )?;
        let has_shifts = calendar.has_shifts();
        let fields = Fields {
            site: &gateway.site,
            line: &gateway.line,
            station: &id,
        };
        let key = format!("station[{index}].lot");
        let lot = match &s.lot {
            Some(l) => self.lot(&key, l.get_ref(), l.span(), fields, calendar)?,
            None => LotConfig::default(),
        };
        let key = format!("station[{index}].operator");
        let operator = match &s.operator {
            Some(o) => self.operator(&key, o.get_ref(), o.span(), has_shifts)?,
            None => OperatorConfig::default(),
        };
        Ok(StationConfig {
            id,
            scan_rules,
            lot,
            operator,
        })
    }

    fn scan_rule(&self, key: &str, rule: &Spanned<ScanRuleRaw>) -> Result<ScanRule> {
        let r = rule.get_ref();
        let name = self.non_empty(&r.name, &format!("{key}.name"))?;
        let pattern = r
            .pattern
            .as_ref()
            .map(|p| {
                regex::Regex::new(p.get_ref()).map_err(|e| {
                    self.err(
                        p.span(),
                        &format!("{key}.pattern"),
                        format!("invalid regular expression: {}", regex_reason(&e)),
                    )
                })
            })
            .transpose()?;
        let action = self.choice(
            Some(&r.action),
            &format!("{key}.action"),
            RuleAction::SetLot,
            &[
                ("set-lot", RuleAction::SetLot),
                ("set-order", RuleAction::SetOrder),
                ("set-operator", RuleAction::SetOperator),
                ("consume-material", RuleAction::ConsumeMaterial),
                ("product", RuleAction::Product),
                ("reject", RuleAction::Reject),
            ],
        )?;
        let mut symbology = Vec::new();
        if let Some(list) = &r.symbology {
            for (i, sym) in list.get_ref().iter().enumerate() {
                let text = sym.get_ref();
                let b = text.as_bytes();
                let valid = b.len() == 3
                    && b[0] == b']'
                    && b[1].is_ascii_alphabetic()
                    && b[2].is_ascii_alphanumeric();
                if !valid {
                    return Err(self.err(
                        sym.span(),
                        &format!("{key}.symbology[{i}]"),
                        format!("\"{text}\" is not an AIM symbology identifier"),
                    ));
                }
                symbology.push(text.clone());
            }
            if symbology.is_empty() {
                return Err(self.err(list.span(), &format!("{key}.symbology"), "is empty"));
            }
        }
        let mut gs1 = Vec::new();
        if let Some(list) = &r.gs1 {
            for (i, ai) in list.get_ref().iter().enumerate() {
                gs1.push(self.ai(ai, &format!("{key}.gs1[{i}]"))?);
            }
            if gs1.is_empty() {
                return Err(self.err(list.span(), &format!("{key}.gs1"), "is empty"));
            }
        }
        if pattern.is_none() && symbology.is_empty() && gs1.is_empty() {
            return Err(self.err_plain(
                rule.span(),
                key,
                "a rule needs at least one of pattern, symbology or gs1 to match scans",
            ));
        }
        let value_ai = match &r.value_ai {
            Some(ai) => {
                let vkey = format!("{key}.value_ai");
                let code = self.ai(ai, &vkey)?;
                if matches!(action, RuleAction::ConsumeMaterial | RuleAction::Reject) {
                    return Err(self.err(
                        ai.span(),
                        &vkey,
                        format!(
                            "action \"{}\" takes no value_ai (a material is read from AIs 01, 10, 21 and 17)",
                            action.as_str()
                        ),
                    ));
                }
                if !gs1.contains(&code) {
                    gs1.push(code.clone());
                }
                Some(code)
            }
            None => None,
        };
        let reason = match (&r.reason, action) {
            (Some(text), RuleAction::Reject) => {
                let t = text.get_ref().trim();
                if t.is_empty() || t.chars().count() > 200 {
                    return Err(self.err(
                        text.span(),
                        &format!("{key}.reason"),
                        "must be 1 to 200 characters",
                    ));
                }
                Some(t.to_owned())
            }
            (Some(text), _) => {
                return Err(self.err(
                    text.span(),
                    &format!("{key}.reason"),
                    format!(
                        "only a \"reject\" rule has a reason (this rule's action is \"{}\")",
                        action.as_str()
                    ),
                ));
            }
            (None, RuleAction::Reject) => {
                return Err(self.err(
                    rule.span(),
                    &format!("{key}.reason"),
                    "a \"reject\" rule needs a reason",
                ));
            }
            (None, _) => None,
        };
        Ok(ScanRule {
            name,
            pattern,
            symbology,
            gs1,
            action,
            value_ai,
            reason,
        })
    }

    /// A GS1 Application Identifier this build knows.
    fn ai(&self, v: &Spanned<String>, key: &str) -> Result<String> {
        let text = v.get_ref();
        if crate::gs1::known_ai(text) {
            Ok(text.clone())
        } else {
            Err(self.err(
                v.span(),
                key,
                format!("\"{text}\" is not a GS1 Application Identifier"),
            ))
        }
    }

    fn lot(
        &self,
        key: &str,
        l: &LotRaw,
        span: Range<usize>,
        fields: Fields<'_>,
        calendar: &Calendar,
    ) -> Result<LotConfig> {
        let has_shifts = calendar.has_shifts();
        let k = |sub: &str| format!("{key}.{sub}");
        let reset = self.choice(
            l.reset.as_ref(),
            &k("reset"),
            Reset::Never,
            &[
                ("never", Reset::Never),
                ("daily", Reset::Daily),
                ("shift", Reset::Shift),
                ("monthly", Reset::Monthly),
                ("yearly", Reset::Yearly),
            ],
        )?;
        if reset == Reset::Shift && !has_shifts {
            return Err(self.err_plain(
                l.reset.as_ref().map_or(span.clone(), |r| r.span()),
                &k("reset"),
                "a per-shift reset needs [[shift]] tables",
            ));
        }
        let numbering = match &l.template {
            Some(t) => {
                let template = Template::parse(t.get_ref())
                    .map_err(|why| self.err(t.span(), &k("template"), why))?;
                template
                    .check_unique(reset)
                    .map_err(|why| self.err(t.span(), &k("template"), why))?;
                if template.uses_shift() && !has_shifts {
                    return Err(self.err_plain(
                        t.span(),
                        &k("template"),
                        "the template uses {shift} but no [[shift]] is defined",
                    ));
                }
                // Ids may hold `_` and `.`, which lot numbers must not (ZPL,
                // file names): check what the template takes from them.
                let sample = template.render(fields, &calendar.at(0), 1);
                if let Some(c) = sample
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
                {
                    return Err(self.err_plain(
                        t.span(),
                        &k("template"),
                        format!(
                            "makes lot numbers such as \"{sample}\" with the character {c:?} (from the site, line or station id); lot numbers use only letters, digits and -"
                        ),
                    ));
                }
                let longest = template.max_len(fields, calendar);
                if longest > GS1_LOT_MAX {
                    return Err(self.err(
                        t.span(),
                        &k("template"),
                        format!(
                            "makes lot numbers of {longest} characters; GS1 AI 10 (and most labels) take at most {GS1_LOT_MAX}"
                        ),
                    ));
                }
                Some(LotNumbering {
                    template,
                    template_text: t.get_ref().clone(),
                    reset,
                })
            }
            None => {
                if let Some(r) = &l.reset {
                    return Err(self.err_plain(
                        r.span(),
                        &k("reset"),
                        "reset needs a template (the gateway numbers lots only from a template)",
                    ));
                }
                None
            }
        };
        let rotate = self.choice(
            l.rotate.as_ref(),
            &k("rotate"),
            Rotate::Never,
            &[
                ("never", Rotate::Never),
                ("shift", Rotate::Shift),
                ("day", Rotate::Day),
            ],
        )?;
        if let (Rotate::Shift, false, Some(r)) = (rotate, has_shifts, &l.rotate) {
            return Err(self.err_plain(
                r.span(),
                &k("rotate"),
                "rotating lots at shift boundaries needs [[shift]] tables",
            ));
        }
        let target = l
            .target
            .as_ref()
            .map(|t| self.int(Some(t), &k("target"), 1, 1..=1_000_000_000))
            .transpose()?
            .map(|n| n as u64);
        let counter = |v: &Option<Spanned<String>>, sub: &str| -> Result<Option<String>> {
            v.as_ref().map(|c| self.non_empty(c, &k(sub))).transpose()
        };
        let good = counter(&l.good, "good")?;
        let scrap = counter(&l.scrap, "scrap")?;
        if let (Some(t), None) = (&l.target, &good) {
            return Err(self.err_plain(
                t.span(),
                &k("target"),
                "a target needs `good`, the counter it counts",
            ));
        }
        let auto_open = l.auto_open.as_ref().is_some_and(|a| *a.get_ref());
        let needs_template = [
            (
                l.target.as_ref().map(|t| t.span()),
                "target",
                "opens the next lot when the target is reached",
            ),
            (
                l.rotate
                    .as_ref()
                    .filter(|_| rotate != Rotate::Never)
                    .map(|r| r.span()),
                "rotate",
                "opens the next lot at the boundary",
            ),
            (
                l.auto_open.as_ref().filter(|_| auto_open).map(|a| a.span()),
                "auto_open",
                "opens a lot at start-up",
            ),
        ];
        for (at, name, what) in needs_template {
            if let (Some(at), false) = (at, numbering.is_some()) {
                return Err(self.err_plain(
                    at,
                    &k(name),
                    format!("{name} {what}, so it needs a template to number lots"),
                ));
            }
        }
        let duplicate_window = match &l.duplicate_window {
            None => DuplicateWindow::Lot,
            Some(w) if w.get_ref() == "lot" => DuplicateWindow::Lot,
            Some(w) => DuplicateWindow::Time(self.duration(
                Some(w),
                &k("duplicate_window"),
                Duration::ZERO,
                Duration::from_secs(60),
                Some(Duration::from_secs(31 * 86_400)),
            )?),
        };
        Ok(LotConfig {
            numbering,
            rotate,
            target,
            good,
            scrap,
            duplicate_window,
            auto_open,
            // Set from `mqtt.max_packet_size` once the whole config is read.
            totals_per_part: DEFAULT_TOTALS_PER_PART,
        })
    }

    fn operator(
        &self,
        key: &str,
        o: &OperatorRaw,
        span: Range<usize>,
        has_shifts: bool,
    ) -> Result<OperatorConfig> {
        let logout_at_shift_end = o.logout_at_shift_end.as_ref().is_some_and(|b| *b.get_ref());
        if logout_at_shift_end && !has_shifts {
            return Err(self.err_plain(
                o.logout_at_shift_end.as_ref().map_or(span, |b| b.span()),
                &format!("{key}.logout_at_shift_end"),
                "logging out at shift end needs [[shift]] tables",
            ));
        }
        let idle_logout = o
            .idle_logout
            .as_ref()
            .map(|d| {
                self.duration(
                    Some(d),
                    &format!("{key}.idle_logout"),
                    Duration::ZERO,
                    Duration::from_secs(60),
                    Some(Duration::from_secs(86_400)),
                )
            })
            .transpose()?;
        Ok(OperatorConfig {
            logout_at_shift_end,
            idle_logout,
        })
    }

    /// `good` and `scrap` must name counter registers of their station.
    pub(super) fn lot_counters(
        &self,
        raw: &[Spanned<StationRaw>],
        stations: &[StationConfig],
        devices: &[DeviceConfig],
    ) -> Result<()> {
        for (i, (r, st)) in raw.iter().zip(stations).enumerate() {
            let Some(lot) = &r.get_ref().lot else {
                continue;
            };
            for (sub, v) in [
                ("good", &lot.get_ref().good),
                ("scrap", &lot.get_ref().scrap),
            ] {
                let Some(v) = v else { continue };
                let counters: Vec<&str> = devices
                    .iter()
                    .flat_map(|d| d.registers())
                    .filter(|reg| reg.role == Role::Counter && reg.station == st.id)
                    .map(|reg| reg.name.as_str())
                    .collect();
                if !counters.contains(&v.get_ref().as_str()) {
                    let known = if counters.is_empty() {
                        "the station has no counter registers".to_owned()
                    } else {
                        format!("counters of this station: {}", counters.join(", "))
                    };
                    return Err(self.err(
                        v.span(),
                        &format!("station[{i}].lot.{sub}"),
                        format!(
                            "\"{}\" is not a counter of station \"{}\" ({known})",
                            v.get_ref(),
                            st.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `"HH:MM"` → minutes after midnight.
fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}
