//! `DeviceRegistry`: the configured devices and which of them are online
//! now, with the connection that serves each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::DeviceConfig;
use crate::client::{ClientHandle, ClientId};

#[derive(Debug, Default)]
pub struct DeviceRegistry {
    devices: HashMap<String, Arc<DeviceSlot>>,
    /// Extension → device id.
    by_extension: HashMap<String, String>,
}

/// One configured device.
#[derive(Debug)]
pub struct DeviceSlot {
    pub config: DeviceConfig,
    presence: Mutex<Presence>,
}

#[derive(Debug, Default)]
struct Presence {
    client: Option<Arc<ClientHandle>>,
    /// When it came online, or went offline.
    since: Option<SystemTime>,
    /// What the firmware said of itself (`HELLO:{json}`).
    info: Option<serde_json::Value>,
    /// The connection that dropped while in a call, whose call waits for
    /// the device to come back.
    orphan: Option<ClientId>,
}

impl DeviceRegistry {
    /// The entries must have passed [`super::validate`].
    pub fn new(configs: &[DeviceConfig]) -> DeviceRegistry {
        let mut r = DeviceRegistry::default();
        for c in configs {
            r.by_extension.insert(c.extension.clone(), c.id.clone());
            r.devices.insert(
                c.id.clone(),
                Arc::new(DeviceSlot {
                    config: c.clone(),
                    presence: Mutex::default(),
                }),
            );
        }
        r
    }

    pub fn get(&self, id: &str) -> Option<Arc<DeviceSlot>> {
        self.devices.get(id).cloned()
    }

    /// The device that an INVITE to `extension` rings, if any.
    pub fn by_extension(&self, extension: &str) -> Option<Arc<DeviceSlot>> {
        self.by_extension.get(extension).and_then(|id| self.get(id))
    }

    /// The device that is this SIP account on the PBX, if any: calls to
    /// the account's AOR ring it.
    pub fn by_account(&self, account: &str) -> Option<Arc<DeviceSlot>> {
        self.devices
            .values()
            .find(|d| d.config.account.as_deref() == Some(account))
            .cloned()
    }

    /// The device an incoming call rings: the one with the called
    /// extension, else the one that is the call's account.
    pub fn for_call(&self, called: &str, account: Option<&str>) -> Option<Arc<DeviceSlot>> {
        self.by_extension(called)
            .or_else(|| account.and_then(|a| self.by_account(a)))
    }

    /// Every device, sorted by id.
    pub fn all(&self) -> Vec<Arc<DeviceSlot>> {
        let mut v: Vec<_> = self.devices.values().cloned().collect();
        v.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        v
    }
}

impl DeviceSlot {
    fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `client` serves the device from now on; returns the connection it
    /// replaces, which the caller closes.
    pub fn connect(&self, client: Arc<ClientHandle>) -> Option<Arc<ClientHandle>> {
        let mut p = self.presence();
        p.since = Some(SystemTime::now());
        p.info = None;
        p.client.replace(client)
    }

    /// The connection `client` ended. False if it had been replaced already
    /// (the device is still online through the newer one).
    pub fn disconnect(&self, client: ClientId) -> bool {
        let mut p = self.presence();
        if p.client.as_ref().is_none_or(|c| c.id != client) {
            return false;
        }
        p.client = None;
        p.since = Some(SystemTime::now());
        true
    }

    /// `client` dropped in a call: the next connection may take it over.
    pub fn set_orphan(&self, client: ClientId) {
        self.presence().orphan = Some(client);
    }

    /// The dropped connection whose calls a new connection takes over.
    pub fn take_orphan(&self) -> Option<ClientId> {
        self.presence().orphan.take()
    }

    /// True (and forgotten) if `client` is still the orphan: nobody came
    /// back for its calls.
    pub fn take_orphan_if(&self, client: ClientId) -> bool {
        let mut p = self.presence();
        if p.orphan == Some(client) {
            p.orphan = None;
            return true;
        }
        false
    }

    pub fn client(&self) -> Option<Arc<ClientHandle>> {
        self.presence().client.clone()
    }

    pub fn since(&self) -> Option<SystemTime> {
        self.presence().since
    }

    pub fn set_info(&self, info: serde_json::Value) {
        self.presence().info = Some(info);
    }

    pub fn info(&self) -> Option<serde_json::Value> {
        self.presence().info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::OfferFilter;
    use crate::devices::AudioFormat;
    use crate::wire::Dialect;

    fn client(id: ClientId) -> Arc<ClientHandle> {
        Arc::new(ClientHandle::new(id, Dialect::V1, OfferFilter::Nothing).0)
    }

    #[test]
    fn a_newer_connection_replaces_the_older_and_outlives_its_end() {
        let r = DeviceRegistry::new(&[DeviceConfig {
            id: "door".into(),
            token: "0123456789abcdef".into(),
            extension: "2001".into(),
            format: AudioFormat::Pcmu,
            account: None,
        }]);
        let slot = r.by_extension("2001").unwrap();
        assert!(r.by_extension("2002").is_none());
        assert!(slot.connect(client(1)).is_none());
        slot.set_info(serde_json::json!({"rssi": -60}));
        let replaced = slot.connect(client(2)).unwrap();
        assert_eq!(replaced.id, 1);
        assert_eq!(slot.info(), None, "a new connection says HELLO anew");
        // The old connection's end does not take the device offline.
        assert!(!slot.disconnect(1));
        assert_eq!(slot.client().unwrap().id, 2);
        assert!(slot.disconnect(2));
        assert!(slot.client().is_none());
    }
}
