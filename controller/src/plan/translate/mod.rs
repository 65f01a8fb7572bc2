//! Where a declaration meets an adapter's vocabulary: a `Guest` spec becomes the PVE keys of a
//! `DesiredGuest` ([`guest`]), a `ModbusDevice` spec a `DeviceDef` and its setpoints `Value`s
//! ([`device`]). Pure. It lives in the plan layer, not in the adapters, so that the adapters
//! only speak protocols and never depend on the spec types; the delete guard
//! ([`guest::MANAGED_TAG`]) is a planning decision too.

pub mod device;
pub mod guest;
