//! The registry of Modbus clients shared by polling and reconciles: one client (one
//! connection, one request at a time) per device, so a setpoint write never interleaves with
//! a poll of the same device.
//!
//! It holds clients only; it never sends a request and never decides what to poll.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use mycopod_adapters::modbus::{ClientOptions, DeviceDef, ModbusClient, ModbusError};

/// Device name -> the client of its current definition. Cheap to clone; clones share the
/// registry.
#[derive(Debug, Clone, Default)]
pub struct DeviceClients {
    inner: Arc<Mutex<BTreeMap<String, Arc<ModbusClient>>>>,
    options: ClientOptions,
}

impl DeviceClients {
    /// An empty registry whose clients use the default reconnect options.
    pub fn new() -> DeviceClients {
        DeviceClients::default()
    }

    /// An empty registry whose clients use `options` (tests shorten the backoff).
    pub fn with_options(options: ClientOptions) -> DeviceClients {
        DeviceClients {
            inner: Arc::default(),
            options,
        }
    }

    /// The client of `def.name`: the registered one when its definition equals `def`,
    /// otherwise a new client that replaces it (a changed declaration gets a fresh
    /// connection; whoever still holds the old one finishes its request on it).
    ///
    /// # Errors
    /// [`ModbusError::Plan`] when the registers cannot be read as declared.
    pub fn client(&self, def: DeviceDef) -> Result<Arc<ModbusClient>, Box<ModbusError>> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = map.get(&def.name)
            && existing.device() == &def
        {
            return Ok(Arc::clone(existing));
        }
        let name = def.name.clone();
        let client = Arc::new(ModbusClient::with_options(def, self.options).map_err(Box::new)?);
        map.insert(name, Arc::clone(&client));
        Ok(client)
    }

    /// The registered client of a device, if any.
    pub fn get(&self, name: &str) -> Option<Arc<ModbusClient>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Forgets the clients of devices not in `names` (devices removed from the declarations).
    pub fn retain(&self, names: &BTreeSet<String>) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| names.contains(name));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use mycopod_adapters::modbus::{DataType, RegisterDef, Table};

    fn def(port: u16) -> DeviceDef {
        let mut d = DeviceDef::tcp("fm-1", "127.0.0.1", port);
        d.registers = vec![RegisterDef::new("flow", Table::Holding, 0, DataType::F32)];
        d
    }

    #[test]
    fn the_same_definition_should_share_one_client_and_a_changed_one_replace_it() {
        let clients = DeviceClients::new();
        let a = clients.client(def(502)).unwrap();
        let b = clients.client(def(502)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = clients.client(def(503)).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&clients.get("fm-1").unwrap(), &c));
        clients.retain(&BTreeSet::new());
        assert!(clients.get("fm-1").is_none());
    }
}
