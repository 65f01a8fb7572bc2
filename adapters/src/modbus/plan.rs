//! Read planning: the fewest read requests per table that cover a device's registers.
//!
//! Pure: no I/O. Neighbouring registers merge into one request when the gap between them is at
//! most `max_gap` and the request stays within 125 registers (2000 bits); no request runs past
//! address 65535.

use super::{DataType, RegisterDef, Table};
use crate::modbus::error::PlanError;

/// One read request: `count` registers (or bits) of `table` starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadRequest {
    /// Table to read.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Number of registers or bits.
    pub count: u16,
}

impl ReadRequest {
    /// The half-open address range the request reads.
    #[must_use]
    pub fn range(&self) -> std::ops::Range<u32> {
        u32::from(self.start)..u32::from(self.start) + u32::from(self.count)
    }

    /// Whether the request reads every address of the register.
    #[must_use]
    pub fn covers(&self, reg: &RegisterDef) -> bool {
        let (span, range) = (reg.span(), self.range());
        reg.table == self.table && span.start >= range.start && span.end <= range.end
    }
}

/// Checks one register definition for what planning and the codec rely on.
///
/// # Errors
/// [`PlanError`] naming the register.
pub fn check_register(reg: &RegisterDef) -> Result<(), PlanError> {
    let max = reg.table.max_read();
    let width = reg.width();
    if width == 0 || width > max {
        return Err(PlanError::BadWidth {
            register: reg.name.clone(),
            width,
            max,
        });
    }
    if reg.span().end > 65536 {
        return Err(PlanError::PastEnd {
            register: reg.name.clone(),
            address: reg.address,
            width,
        });
    }
    let invalid = |reason: &str| {
        Err(PlanError::Invalid {
            register: reg.name.clone(),
            reason: reason.to_owned(),
        })
    };
    if reg.table.is_bits() && reg.data_type != DataType::Bool {
        return invalid("coils and discrete inputs hold only bool values");
    }
    if let Some(bit) = reg.bit
        && (reg.table.is_bits() || bit > 15 || reg.data_type != DataType::Bool)
    {
        return invalid("bit must be 0..=15 on a bool in a holding or input register");
    }
    if reg.writable && !reg.table.is_writable() {
        return invalid("only holding registers and coils can be writable");
    }
    if !(reg.scale.is_finite() && reg.scale != 0.0 && reg.offset.is_finite()) {
        return invalid("scale must be finite and non-zero, offset finite");
    }
    if !(reg.tolerance.is_finite() && reg.tolerance >= 0.0) {
        return invalid("tolerance must be finite and not negative");
    }
    Ok(())
}

/// Plans the read requests that cover `registers`, per table in the order holding, input,
/// coil, discrete, each sorted by address.
///
/// Registers are sorted by address and merged greedily: the next register joins the current
/// request when it starts at most `max_gap` addresses after the request's end and the request
/// would stay within the table's limit. Overlapping registers (bits of one register, aliases)
/// share a request.
///
/// # Errors
/// [`PlanError`] for the first register that cannot be read at all (see [`check_register`]).
pub fn plan_reads<'a>(
    registers: impl IntoIterator<Item = &'a RegisterDef>,
    max_gap: u16,
) -> Result<Vec<ReadRequest>, PlanError> {
    let mut spans: Vec<(Table, u32, u32)> = Vec::new();
    for reg in registers {
        check_register(reg)?;
        let span = reg.span();
        spans.push((reg.table, span.start, span.end));
    }
    spans.sort_unstable();
    spans.dedup();

    let mut out = Vec::new();
    let mut current: Option<(Table, u32, u32)> = None;
    for (table, start, end) in spans {
        current = match current {
            Some((t, s, e))
                if t == table
                    && start <= e + u32::from(max_gap)
                    && end.max(e) - s <= u32::from(table.max_read()) =>
            {
                Some((t, s, e.max(end)))
            }
            Some(done) => {
                out.push(request(done));
                Some((table, start, end))
            }
            None => Some((table, start, end)),
        };
    }
    out.extend(current.map(request));
    Ok(out)
}

#[allow(clippy::cast_possible_truncation)]
fn request((table, start, end): (Table, u32, u32)) -> ReadRequest {
    // check_register keeps end <= 65536 and the merge keeps end - start <= 2000.
    ReadRequest {
        table,
        start: start as u16,
        count: (end - start) as u16,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn h(name: &str, address: u16, data_type: DataType) -> RegisterDef {
        RegisterDef::new(name, Table::Holding, address, data_type)
    }

    fn render(reqs: &[ReadRequest]) -> String {
        reqs.iter()
            .map(|r| format!("{} {}+{}", r.table, r.start, r.count))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn plan_should_merge_neighbours_within_the_gap_and_split_beyond_it() {
        let regs = [
            h("flow", 0, DataType::F32),
            h("status", 10, DataType::U16),
            h("cutoff", 20, DataType::F32),
            h("far", 100, DataType::U16),
            RegisterDef::new("temp", Table::Input, 5, DataType::I16),
            RegisterDef::new("run", Table::Coil, 3, DataType::Bool),
            RegisterDef::new("alarm", Table::Coil, 1900, DataType::Bool),
        ];
        expect_test::expect!["holding registers 0+22; holding registers 100+1; input registers 5+1; coils 3+1; coils 1900+1"]
            .assert_eq(&render(&plan_reads(&regs, 16).unwrap()));
        expect_test::expect!["holding registers 0+101; input registers 5+1; coils 3+1898"]
            .assert_eq(&render(&plan_reads(&regs, 2000).unwrap()));
        expect_test::expect!["holding registers 0+2; holding registers 10+1; holding registers 20+2; holding registers 100+1; input registers 5+1; coils 3+1; coils 1900+1"]
            .assert_eq(&render(&plan_reads(&regs, 0).unwrap()));
    }

    #[test]
    fn plan_should_never_exceed_125_registers_per_request() {
        let regs: Vec<_> = (0..100)
            .map(|i| h(&format!("r{i}"), i * 4, DataType::F64))
            .collect();
        let plan = plan_reads(&regs, 16).unwrap();
        expect_test::expect!["holding registers 0+124; holding registers 124+124; holding registers 248+124; holding registers 372+28"]
            .assert_eq(&render(&plan));
    }

    #[test]
    fn plan_should_share_one_request_for_bits_of_one_register() {
        let regs = [
            h("a", 7, DataType::Bool).with_bit(0),
            h("b", 7, DataType::Bool).with_bit(9),
        ];
        assert_eq!(
            plan_reads(&regs, 0).unwrap(),
            vec![ReadRequest {
                table: Table::Holding,
                start: 7,
                count: 1
            }]
        );
    }

    #[test]
    fn plan_should_refuse_a_register_past_address_65535() {
        let err = plan_reads(&[h("x", 65535, DataType::U32)], 16).unwrap_err();
        assert!(matches!(err, PlanError::PastEnd { .. }), "{err}");
        assert!(plan_reads(&[h("x", 65534, DataType::U32)], 16).is_ok());
        let err = plan_reads(&[h("s", 0, DataType::String { registers: 126 })], 16).unwrap_err();
        assert!(matches!(err, PlanError::BadWidth { .. }), "{err}");
    }

    #[test]
    fn plan_should_refuse_contradicting_definitions() {
        let bad = [
            RegisterDef::new("x", Table::Coil, 0, DataType::U16),
            RegisterDef::new("x", Table::Input, 0, DataType::U16).writable(0.0),
            h("x", 0, DataType::U16).with_bit(3),
            h("x", 0, DataType::Bool).with_bit(16),
            h("x", 0, DataType::U16).scaled(0.0, 0.0),
        ];
        for reg in bad {
            assert!(
                matches!(check_register(&reg), Err(PlanError::Invalid { .. })),
                "{reg:?}"
            );
        }
    }

    fn arb_register() -> impl Strategy<Value = RegisterDef> {
        let table = prop_oneof![
            Just(Table::Holding),
            Just(Table::Input),
            Just(Table::Coil),
            Just(Table::Discrete)
        ];
        let data_type = prop_oneof![
            Just(DataType::U16),
            Just(DataType::F32),
            Just(DataType::F64),
            (1u16..=125).prop_map(|registers| DataType::String { registers }),
        ];
        (table, any::<u16>(), data_type).prop_map(|(table, address, data_type)| {
            let data_type = if table.is_bits() {
                DataType::Bool
            } else {
                data_type
            };
            let mut reg = RegisterDef::new("r", table, address, data_type);
            // Keep the register inside the address space.
            let end = u32::from(address) + u32::from(reg.width());
            if end > 65536 {
                reg.address = u16::try_from(65536 - u32::from(reg.width())).unwrap();
            }
            reg
        })
    }

    proptest! {
        #[test]
        fn plan_should_cover_every_register_within_limits(
            regs in proptest::collection::vec(arb_register(), 0..60),
            max_gap in 0u16..300,
        ) {
            let plan = plan_reads(&regs, max_gap).unwrap();
            for reg in &regs {
                prop_assert!(plan.iter().any(|r| r.covers(reg)), "{reg:?} not covered by {plan:?}");
            }
            for r in &plan {
                prop_assert!(r.count >= 1 && r.count <= r.table.max_read(), "{r:?}");
                prop_assert!(r.range().end <= 65536, "{r:?}");
            }
            // Merging never needs more requests than one request per register.
            prop_assert!(plan.len() <= regs.len());
            // Requests of one table come in address order, never twice from the same start.
            // (Overlapping registers too wide to share a request may overlap.)
            for w in plan.windows(2) {
                if w[0].table == w[1].table {
                    prop_assert!(w[0].start < w[1].start, "{w:?}");
                }
            }
        }

        #[test]
        fn plan_should_not_need_more_requests_with_a_larger_gap_for_disjoint_registers(
            addrs in proptest::collection::btree_set(0u16..2000, 0..60),
            gap in 0u16..200,
        ) {
            // Disjoint single registers: the greedy plan is optimal, so a larger gap never
            // needs more requests than gap 0 or one request per register.
            let regs: Vec<_> = addrs.iter().map(|&a| h("r", a, DataType::U16)).collect();
            let merged = plan_reads(&regs, gap).unwrap().len();
            let tight = plan_reads(&regs, 0).unwrap().len();
            prop_assert!(merged <= tight && tight <= regs.len());
        }
    }
}
