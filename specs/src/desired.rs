//! The desired state handed to the planner: every typed resource per kind, sorted by name, each
//! with its [`Source`] so that later findings can point at the exact field. Built only from a
//! load that validated without errors ([`check`]). Pure data; no I/O.

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::kinds::{
    AlertRuleSpec, DeclarationSpec, GuestSpec, HandshakePolicySpec, Metadata, ModbusDeviceSpec,
    NotificationChannelSpec, ProxmoxClusterSpec, Spec,
};
use crate::load::Loaded;
use crate::source::Source;
use crate::values::Name;

/// One declared resource of a kind.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    /// `metadata` (name and labels).
    pub metadata: Metadata,
    /// The kind's spec.
    pub spec: S,
    /// Where it was written.
    pub source: Source,
}

impl<S> Resource<S> {
    /// `metadata.name`.
    pub fn name(&self) -> &Name {
        &self.metadata.name
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.metadata.labels
    }
}

/// Everything a repository declares, per kind, each list sorted by name.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// `ProxmoxCluster` documents.
    pub clusters: Vec<Resource<ProxmoxClusterSpec>>,
    /// `Guest` documents.
    pub guests: Vec<Resource<GuestSpec>>,
    /// `ModbusDevice` documents.
    pub devices: Vec<Resource<ModbusDeviceSpec>>,
    /// `AlertRule` documents.
    pub alert_rules: Vec<Resource<AlertRuleSpec>>,
    /// `NotificationChannel` documents.
    pub channels: Vec<Resource<NotificationChannelSpec>>,
    /// `HandshakePolicy` documents.
    pub policies: Vec<Resource<HandshakePolicySpec>>,
    /// `Declaration` documents.
    pub declarations: Vec<Resource<DeclarationSpec>>,
}

fn find<'a, S>(list: &'a [Resource<S>], name: &str) -> Option<&'a Resource<S>> {
    list.binary_search_by(|r| r.metadata.name.as_str().cmp(name))
        .ok()
        .map(|i| &list[i])
}

impl DesiredState {
    /// Collects every typed document of `loaded`. When names repeat (which [`check`] refuses)
    /// the first one wins.
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let mut d = DesiredState::default();
        for doc in &loaded.documents {
            let Some(t) = &doc.typed else { continue };
            let metadata = t.metadata.clone();
            let source = doc.source.clone();
            macro_rules! push {
                ($list:ident, $spec:expr) => {
                    d.$list.push(Resource {
                        metadata,
                        spec: $spec,
                        source,
                    })
                };
            }
            match &t.spec {
                Spec::ProxmoxCluster(s) => push!(clusters, s.clone()),
                Spec::Guest(s) => push!(guests, (**s).clone()),
                Spec::ModbusDevice(s) => push!(devices, s.clone()),
                Spec::AlertRule(s) => push!(alert_rules, s.clone()),
                Spec::NotificationChannel(s) => push!(channels, s.clone()),
                Spec::HandshakePolicy(s) => push!(policies, s.clone()),
                Spec::Declaration(s) => push!(declarations, s.clone()),
            }
        }
        macro_rules! sort {
            ($($list:ident),*) => {$(
                d.$list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                d.$list.dedup_by(|b, a| a.metadata.name == b.metadata.name);
            )*};
        }
        sort!(
            clusters,
            guests,
            devices,
            alert_rules,
            channels,
            policies,
            declarations
        );
        d
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Resource<ProxmoxClusterSpec>> {
        find(&self.clusters, name)
    }

    /// The guest named `name`.
    pub fn guest(&self, name: &str) -> Option<&Resource<GuestSpec>> {
        find(&self.guests, name)
    }

    /// The Modbus device named `name`.
    pub fn device(&self, name: &str) -> Option<&Resource<ModbusDeviceSpec>> {
        find(&self.devices, name)
    }

    /// The notification channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&Resource<NotificationChannelSpec>> {
        find(&self.channels, name)
    }

    /// The alert rule named `name`.
    pub fn alert_rule(&self, name: &str) -> Option<&Resource<AlertRuleSpec>> {
        find(&self.alert_rules, name)
    }

    /// The handshake policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Resource<HandshakePolicySpec>> {
        find(&self.policies, name)
    }
}

/// A repository that validated: its desired state and the warnings that remain.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The typed desired state.
    pub desired: DesiredState,
    /// Findings of severity warning.
    pub warnings: Vec<Diagnostic>,
}

/// Validates `loaded`; with no errors, returns the desired state and the warnings, else every
/// finding (errors and warnings).
pub fn check(loaded: &Loaded) -> Result<Checked, Vec<Diagnostic>> {
    let diagnostics = crate::validate::validate(loaded);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    Ok(Checked {
        desired: DesiredState::from_loaded(loaded),
        warnings: diagnostics,
    })
}
