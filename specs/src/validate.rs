//! Semantic validation: checks within and across documents (duplicates, references, register
//! maps, setpoints, secrets, guest types, policies) and collects every finding, never stopping
//! at the first. Pure: works on a [`Loaded`] set, reads nothing.

use std::collections::{BTreeMap, HashMap};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::kinds::{
    AlertRuleSpec, Condition, GuestSpec, GuestType, HandshakePolicySpec, Kind, ModbusDeviceSpec,
    NotificationChannelSpec, ProxmoxClusterSpec, Register, Role, SetpointValue, Spec, ValueType,
};
use crate::load::{Document, Loaded, suggest};
use crate::source::{Source, push_key};

/// All findings for a loaded set: those of loading plus the semantic ones, sorted by file,
/// line and column.
pub fn validate(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut out = loaded.diagnostics.clone();
    let index = Index::new(&loaded.documents);
    let mut cx = Cx {
        index: &index,
        out: &mut out,
    };
    cx.duplicate_names(&loaded.documents);
    let mut vmids: HashMap<(&str, u32), &Source> = HashMap::new();
    for doc in &loaded.documents {
        let Some(typed) = &doc.typed else { continue };
        let src = &doc.source;
        match &typed.spec {
            Spec::ProxmoxCluster(s) => cx.cluster(src, s),
            Spec::Guest(s) => {
                cx.guest(src, s);
                if let Some(vmid) = s.vmid {
                    let key = (s.cluster.as_str(), vmid.get());
                    if let Some(first) = vmids.get(&key) {
                        let p = first.locate("spec.vmid");
                        cx.err(
                            src,
                            "spec.vmid",
                            Code::DuplicateVmid,
                            format!(
                                "vmid {vmid} is already used in cluster \"{}\" by {}:{}:{}",
                                s.cluster, first.file, p.line, p.column
                            ),
                        );
                    } else {
                        vmids.insert(key, src);
                    }
                }
            }
            Spec::ModbusDevice(s) => cx.device(src, s),
            Spec::AlertRule(s) => cx.alert(src, s),
            Spec::NotificationChannel(s) => cx.channel(src, s),
            Spec::HandshakePolicy(s) => cx.policy(src, s),
            Spec::Declaration(s) => {
                if s.text.trim().is_empty() {
                    cx.err(
                        src,
                        "spec.text",
                        Code::EmptyDeclaration,
                        "declaration text is empty".into(),
                    );
                }
            }
        }
    }
    missing_nodes(loaded, &mut out);
    out.sort();
    out.dedup();
    out
}

/// Names of every document per kind (also of documents that did not deserialize, so that a
/// reference to a broken document is not reported twice), and the typed devices by name.
struct Index<'a> {
    names: BTreeMap<Kind, Vec<&'a str>>,
    devices: HashMap<&'a str, &'a ModbusDeviceSpec>,
}

impl<'a> Index<'a> {
    fn new(docs: &'a [Document]) -> Self {
        let mut names: BTreeMap<Kind, Vec<&'a str>> = BTreeMap::new();
        let mut devices = HashMap::new();
        for doc in docs {
            if let (Some(kind), Some(name)) = (doc.kind, doc.name.as_deref()) {
                names.entry(kind).or_default().push(name);
            }
            if let Some(t) = &doc.typed
                && let Spec::ModbusDevice(d) = &t.spec
            {
                devices.entry(t.metadata.name.as_str()).or_insert(d);
            }
        }
        for v in names.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Self { names, devices }
    }

    fn has(&self, kind: Kind, name: &str) -> bool {
        self.names
            .get(&kind)
            .is_some_and(|v| v.binary_search(&name).is_ok())
    }

    fn suggest(&self, kind: Kind, name: &str) -> String {
        let candidates = self.names.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        if candidates.is_empty() {
            format!(" (there is no {kind} in this repository)")
        } else {
            suggest(name, candidates)
        }
    }
}

/// The raw range of an integer register type (floats and text have none worth checking).
fn raw_range(t: ValueType) -> Option<(f64, f64)> {
    match t {
        ValueType::U16 => Some((0.0, f64::from(u16::MAX))),
        ValueType::I16 => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
        ValueType::U32 => Some((0.0, f64::from(u32::MAX))),
        ValueType::I32 => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        ValueType::U64 => Some((0.0, u64::MAX as f64)),
        ValueType::I64 => Some((i64::MIN as f64, i64::MAX as f64)),
        _ => None,
    }
}

/// Field names with whether the spec sets them.
type FieldList<'a> = Vec<(&'a str, bool)>;

struct Cx<'a, 'i> {
    index: &'a Index<'i>,
    out: &'a mut Vec<Diagnostic>,
}

fn field(base: &str, name: &str) -> String {
    let mut p = base.to_owned();
    push_key(&mut p, name);
    p
}

/// Whether `text` can name an environment variable (`PVE_TOKEN`).
fn is_env_name(text: &str) -> bool {
    !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Cx<'_, '_> {
    fn err(&mut self, src: &Source, path: &str, code: Code, message: String) {
        self.out
            .push(src.diagnostic(path, Severity::Error, code, message));
    }

    fn warn(&mut self, src: &Source, path: &str, code: Code, message: String) {
        self.out
            .push(src.diagnostic(path, Severity::Warning, code, message));
    }

    fn err_key(&mut self, src: &Source, path: &str, code: Code, message: String) {
        self.out
            .push(src.diagnostic_at_key(path, Severity::Error, code, message));
    }

    fn reference(&mut self, src: &Source, path: &str, kind: Kind, name: &str) {
        if !self.index.has(kind, name) {
            let hint = self.index.suggest(kind, name);
            self.err(
                src,
                path,
                Code::UnknownReference,
                format!("unknown {kind} \"{name}\"{hint}"),
            );
        }
    }

    /// An inline secret where a reference belongs.
    fn inline_secret(&mut self, src: &Source, path: &str, value: Option<&String>, instead: &str) {
        if value.is_some() {
            self.err_key(
                src,
                path,
                Code::InlineSecret,
                format!(
                    "secret written inline: put the secret in an environment variable or a file and use {instead}"
                ),
            );
        }
    }

    /// A `*Env` field whose value cannot be a variable name is most likely the secret itself.
    fn env_ref(&mut self, src: &Source, path: &str, value: Option<&String>) {
        if let Some(v) = value
            && !is_env_name(v)
        {
            self.err(
                src,
                path,
                Code::InlineSecret,
                "this is not an environment variable name (letters, digits and '_'); if it is the secret itself, put the secret in an environment variable or a file".into(),
            );
        }
    }

    fn duplicate_names(&mut self, docs: &[Document]) {
        let mut first: HashMap<(Kind, &str), &Source> = HashMap::new();
        for doc in docs {
            let (Some(kind), Some(name)) = (doc.kind, doc.name.as_deref()) else {
                continue;
            };
            match first.get(&(kind, name)) {
                Some(prev) => {
                    let p = prev.locate("metadata.name");
                    self.err(
                        &doc.source,
                        "metadata.name",
                        Code::DuplicateName,
                        format!(
                            "duplicate {kind} name \"{name}\", first defined at {}:{}:{}",
                            prev.file, p.line, p.column
                        ),
                    );
                }
                None => {
                    first.insert((kind, name), &doc.source);
                }
            }
        }
    }

    fn cluster(&mut self, src: &Source, s: &ProxmoxClusterSpec) {
        let a = &s.auth;
        self.inline_secret(
            src,
            "spec.auth.secret",
            a.secret.as_ref(),
            "secretEnv or secretFile",
        );
        self.inline_secret(
            src,
            "spec.auth.password",
            a.password.as_ref(),
            "passwordEnv or passwordFile",
        );
        self.env_ref(src, "spec.auth.secretEnv", a.secret_env.as_ref());
        self.env_ref(src, "spec.auth.passwordEnv", a.password_env.as_ref());
        let token = a.token_id.is_some();
        let user = a.user.is_some();
        let token_refs = usize::from(a.secret_env.is_some()) + usize::from(a.secret_file.is_some());
        let pass_refs =
            usize::from(a.password_env.is_some()) + usize::from(a.password_file.is_some());
        let problem = match (token, user) {
            (true, true) => Some("use either tokenId or user, not both"),
            (false, false) if a.secret.is_none() && a.password.is_none() => Some(
                "set tokenId with secretEnv or secretFile, or user with passwordEnv or passwordFile",
            ),
            (true, false) if token_refs != 1 && a.secret.is_none() => {
                Some("an API token needs exactly one of secretEnv or secretFile")
            }
            (false, true) if pass_refs != 1 && a.password.is_none() => {
                Some("a user needs exactly one of passwordEnv or passwordFile")
            }
            _ => None,
        };
        if let Some(p) = problem {
            self.err(src, "spec.auth", Code::InvalidAuth, p.into());
        }
        if let Some(id) = &a.token_id
            && !(id.contains('@') && id.contains('!'))
        {
            self.err(
                src,
                "spec.auth.tokenId",
                Code::InvalidAuth,
                format!("token id \"{id}\" must look like user@realm!name"),
            );
        }
        if s.tls.insecure_skip_verify {
            if s.tls.ca_file.is_some() {
                self.err(
                    src,
                    "spec.tls",
                    Code::InvalidAuth,
                    "use either caFile or insecureSkipVerify, not both".into(),
                );
            }
            self.warn(
                src,
                "spec.tls.insecureSkipVerify",
                Code::InsecureTls,
                "TLS verification is off: anyone on the network path can impersonate the cluster; prefer caFile".into(),
            );
        }
        if !s.endpoint.is_https() {
            self.warn(
                src,
                "spec.endpoint",
                Code::InsecureTls,
                "endpoint uses plain http: credentials travel unencrypted".into(),
            );
        }
    }

    fn guest(&mut self, src: &Source, s: &GuestSpec) {
        self.reference(
            src,
            "spec.cluster",
            Kind::ProxmoxCluster,
            s.cluster.as_str(),
        );
        if s.vmid.is_none() {
            self.out.push(src.diagnostic_at_key(
                "spec",
                Severity::Warning,
                Code::MissingVmid,
                "guest has no vmid: Proxmox VE will choose one, and the controller cannot reliably recognise the guest afterwards",
            ));
        }
        let (lxc_only, qemu_only): (FieldList, FieldList) = (
            vec![
                ("hostname", s.hostname.is_some()),
                ("swap", s.swap.is_some()),
                ("rootfs", s.rootfs.is_some()),
                ("mountPoints", !s.mount_points.is_empty()),
                ("ostemplate", s.ostemplate.is_some()),
                ("unprivileged", s.unprivileged.is_some()),
                ("features", s.features.is_some()),
                ("passwordEnv", s.password_env.is_some()),
                ("password", s.password.is_some()),
            ],
            vec![
                ("name", s.name.is_some()),
                ("sockets", s.sockets.is_some()),
                ("cpu", s.cpu.is_some()),
                ("balloon", s.balloon.is_some()),
                ("disks", !s.disks.is_empty()),
                ("clone", s.clone.is_some()),
                ("agent", s.agent.is_some()),
                ("cloudInit", s.cloud_init.is_some()),
            ],
        );
        let (wrong, this, other, hint) = match s.guest_type {
            GuestType::Qemu => (
                lxc_only,
                "qemu",
                "lxc",
                "qemu guests use name, disks and clone",
            ),
            GuestType::Lxc => (
                qemu_only,
                "lxc",
                "qemu",
                "lxc guests use hostname, rootfs, mountPoints and ostemplate",
            ),
        };
        for (name, present) in wrong {
            if present {
                self.err_key(
                    src,
                    &field("spec", name),
                    Code::WrongGuestType,
                    format!(
                        "\"{name}\" applies to {other} guests only, this guest is {this} ({hint})"
                    ),
                );
            }
        }
        for (i, n) in s.networks.iter().enumerate() {
            let base = format!("spec.networks[{i}]");
            let fields: &[(&str, bool)] = match s.guest_type {
                GuestType::Qemu => &[
                    ("name", n.name.is_some()),
                    ("ip", n.ip.is_some()),
                    ("gw", n.gw.is_some()),
                    ("ip6", n.ip6.is_some()),
                    ("gw6", n.gw6.is_some()),
                ],
                GuestType::Lxc => &[("model", n.model.is_some())],
            };
            for (name, present) in fields {
                if *present {
                    self.err_key(
                        src,
                        &field(&base, name),
                        Code::WrongGuestType,
                        format!(
                            "network \"{name}\" applies to {other} guests only, this guest is {this}{}",
                            if s.guest_type == GuestType::Qemu {
                                " (set addresses through cloudInit.ipConfig)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
            if let Some(v) = n.vlan
                && !(1..=4094).contains(&v)
            {
                self.err(
                    src,
                    &field(&base, "vlan"),
                    Code::InvalidRange,
                    format!("vlan {v} is outside 1..=4094"),
                );
            }
        }
        if s.guest_type == GuestType::Qemu {
            self.inline_secret(
                src,
                "spec.cloudInit.password",
                s.cloud_init.as_ref().and_then(|c| c.password.as_ref()),
                "passwordEnv",
            );
            self.env_ref(
                src,
                "spec.cloudInit.passwordEnv",
                s.cloud_init.as_ref().and_then(|c| c.password_env.as_ref()),
            );
        } else {
            self.inline_secret(src, "spec.password", s.password.as_ref(), "passwordEnv");
            self.env_ref(src, "spec.passwordEnv", s.password_env.as_ref());
        }
        for (name, value) in [("cores", s.cores), ("sockets", s.sockets)] {
            if value == Some(0) {
                self.err(
                    src,
                    &field("spec", name),
                    Code::InvalidRange,
                    format!("{name} must be at least 1"),
                );
            }
        }
        if let (Some(b), Some(m)) = (s.balloon, s.memory)
            && b > m
        {
            self.err(
                src,
                "spec.balloon",
                Code::InvalidRange,
                format!("balloon {b} is larger than memory {m}"),
            );
        }
        if let Some(m) = s.memory
            && m.as_mib() < 16
        {
            self.err(
                src,
                "spec.memory",
                Code::InvalidRange,
                format!("memory {m} is below the 16MiB Proxmox VE accepts"),
            );
        }
    }

    fn device(&mut self, src: &Source, s: &ModbusDeviceSpec) {
        if s.unit > 247 {
            self.err(
                src,
                "spec.unit",
                Code::InvalidRange,
                format!("unit {} is outside 0..=247", s.unit),
            );
        }
        if s.poll_interval.as_millis() == 0 {
            self.err(
                src,
                "spec.pollInterval",
                Code::InvalidRange,
                "pollInterval must be longer than 0".into(),
            );
        }
        if s.timeout.as_millis() == 0 {
            self.err(
                src,
                "spec.timeout",
                Code::InvalidRange,
                "timeout must be longer than 0".into(),
            );
        }
        if s.offline_after == 0 {
            self.err(
                src,
                "spec.offlineAfter",
                Code::InvalidRange,
                "offlineAfter must be at least 1".into(),
            );
        }
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, r) in s.registers.iter().enumerate() {
            let base = format!("spec.registers[{i}]");
            if let Some(&first) = by_name.get(r.name.as_str()) {
                self.err(
                    src,
                    &field(&base, "name"),
                    Code::DuplicateRegister,
                    format!(
                        "duplicate register name \"{}\", also at spec.registers[{first}]",
                        r.name
                    ),
                );
            } else {
                by_name.insert(r.name.as_str(), i);
            }
            self.register(src, &base, r);
        }
        self.overlaps(src, &s.registers);
        for (key, value) in &s.setpoints {
            let path = field("spec.setpoints", key);
            let Some(&i) = by_name.get(key.as_str()) else {
                let names: Vec<&str> = s.registers.iter().map(|r| r.name.as_str()).collect();
                self.err_key(
                    src,
                    &path,
                    Code::UnknownReference,
                    format!(
                        "setpoint for unknown register \"{key}\"{}",
                        suggest(key, &names)
                    ),
                );
                continue;
            };
            let r = &s.registers[i];
            if !r.writable {
                self.err_key(
                    src,
                    &path,
                    Code::SetpointNotWritable,
                    format!(
                        "register \"{key}\" is not writable (set writable: true on spec.registers[{i}] if the device accepts writes)"
                    ),
                );
            }
            let type_ok = matches!(
                (r.value_type, value),
                (ValueType::Bool, SetpointValue::Bool(_))
                    | (ValueType::String, SetpointValue::Text(_))
            ) || (r.value_type.is_numeric()
                && matches!(value, SetpointValue::Number(_)));
            if !type_ok {
                self.err(
                    src,
                    &path,
                    Code::SetpointType,
                    format!(
                        "setpoint for \"{key}\" does not fit its type {}",
                        r.value_type.as_str()
                    ),
                );
                continue;
            }
            if let SetpointValue::Number(v) = value
                && let Some((lo, hi)) = raw_range(r.value_type)
            {
                let raw = (v - r.offset.unwrap_or(0.0)) / r.scale.unwrap_or(1.0);
                if !(lo..=hi).contains(&raw.round()) {
                    self.err(
                        src,
                        &path,
                        Code::SetpointOutOfRange,
                        format!(
                            "setpoint {v} for \"{key}\" needs the raw value {raw}, which does not fit {}",
                            r.value_type.as_str()
                        ),
                    );
                    continue;
                }
            }
            if let SetpointValue::Number(v) = value {
                let below = r.min.is_some_and(|m| *v < m);
                let above = r.max.is_some_and(|m| *v > m);
                if below || above {
                    let lo = r.min.map_or("-inf".to_owned(), |m| m.to_string());
                    let hi = r.max.map_or("+inf".to_owned(), |m| m.to_string());
                    self.err(
                        src,
                        &path,
                        Code::SetpointOutOfRange,
                        format!("setpoint {v} for \"{key}\" is outside its limits [{lo}, {hi}]"),
                    );
                }
            }
        }
    }

    fn register(&mut self, src: &Source, base: &str, r: &Register) {
        let ty = r.value_type.as_str();
        if r.table.is_bits() && r.value_type != ValueType::Bool {
            self.err(
                src,
                &field(base, "type"),
                Code::RegisterTable,
                format!(
                    "a {:?} table holds single bits: use type bool, not {ty}",
                    r.table
                )
                .to_lowercase(),
            );
        }
        if r.writable && !r.table.is_writable() {
            self.err_key(
                src,
                &field(base, "writable"),
                Code::RegisterTable,
                format!(
                    "{} registers are read-only in Modbus, so this register cannot be writable",
                    format!("{:?}", r.table).to_lowercase()
                ),
            );
        }
        if let Some(bit) = r.bit {
            if r.value_type != ValueType::Bool || r.table.is_bits() {
                self.err_key(
                    src,
                    &field(base, "bit"),
                    Code::RegisterTable,
                    "bit selects one bit of a holding or input register and needs type bool".into(),
                );
            } else if bit > 15 {
                self.err(
                    src,
                    &field(base, "bit"),
                    Code::InvalidRange,
                    format!("bit {bit} is outside 0..=15"),
                );
            }
        }
        match (r.value_type.words(), r.length) {
            (None, None) if !r.table.is_bits() => self.err(
                src,
                &field(base, "type"),
                Code::RegisterTooShort,
                "a string register needs length (the number of registers, two characters each)"
                    .into(),
            ),
            (None, Some(0)) => self.err(
                src,
                &field(base, "length"),
                Code::RegisterTooShort,
                "length must be at least 1".into(),
            ),
            (Some(w), Some(l)) if l < w && !r.table.is_bits() => self.err(
                src,
                &field(base, "length"),
                Code::RegisterTooShort,
                format!("length {l} is too short for {ty}, which needs {w} registers"),
            ),
            _ => {}
        }
        let last = u32::from(r.address.get()) + r.width() - 1;
        if last > 65_535 {
            self.err(
                src,
                &field(base, "address"),
                Code::RegisterOutOfRange,
                format!(
                    "register \"{}\" at {} with width {} runs past address 65535 (to {last})",
                    r.name,
                    r.address,
                    r.width()
                ),
            );
        }
        if let (Some(lo), Some(hi)) = (r.min, r.max)
            && lo > hi
        {
            self.err(
                src,
                &field(base, "min"),
                Code::InvalidRange,
                format!("min {lo} is above max {hi}"),
            );
        }
        if r.tolerance.is_some_and(|t| t < 0.0) {
            self.err(
                src,
                &field(base, "tolerance"),
                Code::InvalidRange,
                "tolerance must not be negative".into(),
            );
        }
        if r.scale == Some(0.0) {
            self.err(
                src,
                &field(base, "scale"),
                Code::InvalidRange,
                "scale 0 makes every reading 0".into(),
            );
        }
    }

    fn overlaps(&mut self, src: &Source, regs: &[Register]) {
        let mut spans: Vec<(crate::kinds::Table, u32, u32, Option<u8>, usize)> = regs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = u32::from(r.address.get());
                (r.table, a, a + r.width() - 1, r.bit, i)
            })
            .collect();
        spans.sort_by_key(|s| (s.0, s.1, s.4));
        for (j, b) in spans.iter().enumerate() {
            for a in spans[..j].iter().rev() {
                if a.0 != b.0 || a.2 < b.1 {
                    continue;
                }
                // A `bit` register is a view of one bit of a word: it may sit on a word that
                // another register reads whole, and distinct bits of one word do not collide.
                match (a.3, b.3) {
                    (Some(x), Some(y)) if x != y || a.1 != b.1 => continue,
                    (Some(_), None) | (None, Some(_)) => continue,
                    _ => {}
                }
                let (ra, rb) = (&regs[a.4], &regs[b.4]);
                self.err(
                    src,
                    &format!("spec.registers[{}].address", b.4),
                    Code::RegisterOverlap,
                    format!(
                        "register \"{}\" ({}..={}) overlaps \"{}\" ({}..={}) in the {} table",
                        rb.name,
                        b.1,
                        b.2,
                        ra.name,
                        a.1,
                        a.2,
                        format!("{:?}", b.0).to_lowercase()
                    ),
                );
                break;
            }
        }
    }

    fn alert(&mut self, src: &Source, s: &AlertRuleSpec) {
        self.reference(src, "spec.device", Kind::ModbusDevice, s.device.as_str());
        let numeric = !matches!(s.condition, Condition::Offline(_));
        match (&s.register, numeric) {
            (None, true) => self.err_key(
                src,
                "spec",
                Code::MissingField,
                "missing field \"register\" in spec (only an offline condition needs none)".into(),
            ),
            (Some(reg), _) => {
                if let Some(dev) = self.index.devices.get(s.device.as_str()) {
                    match dev.registers.iter().find(|r| r.name == *reg) {
                        None => {
                            let names: Vec<&str> =
                                dev.registers.iter().map(|r| r.name.as_str()).collect();
                            self.err(
                                src,
                                "spec.register",
                                Code::UnknownReference,
                                format!(
                                    "unknown register \"{reg}\" on ModbusDevice \"{}\"{}",
                                    s.device,
                                    suggest(reg.as_str(), &names)
                                ),
                            );
                        }
                        Some(r) if numeric && !r.value_type.is_numeric() => self.err(
                            src,
                            "spec.condition",
                            Code::NonNumericRegister,
                            format!(
                                "register \"{reg}\" is {}, not a number: only offline conditions apply to it",
                                r.value_type.as_str()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            (None, false) => {}
        }
        match s.condition {
            Condition::Outside([lo, hi]) if lo >= hi => self.err(
                src,
                "spec.condition.outside",
                Code::InvalidRange,
                format!("outside [{lo}, {hi}] needs the low bound first"),
            ),
            Condition::Offline(false) => self.err(
                src,
                "spec.condition.offline",
                Code::InvalidRange,
                "offline: false never fires; write offline: true".into(),
            ),
            _ => {}
        }
        if s.hysteresis.is_some_and(|h| h < 0.0) {
            self.err(
                src,
                "spec.hysteresis",
                Code::InvalidRange,
                "hysteresis must not be negative".into(),
            );
        }
        for (i, ch) in s.notify.iter().enumerate() {
            self.reference(
                src,
                &format!("spec.notify[{i}]"),
                Kind::NotificationChannel,
                ch.as_str(),
            );
        }
    }

    fn channel(&mut self, src: &Source, s: &NotificationChannelSpec) {
        let w = &s.webhook;
        self.inline_secret(
            src,
            "spec.webhook.secret",
            w.secret.as_ref(),
            "secretEnv or secretFile",
        );
        self.env_ref(src, "spec.webhook.secretEnv", w.secret_env.as_ref());
        match (
            w.secret_env.is_some(),
            w.secret_file.is_some(),
            w.secret.is_some(),
        ) {
            (true, true, _) => self.err(
                src,
                "spec.webhook",
                Code::InvalidAuth,
                "use either secretEnv or secretFile, not both".into(),
            ),
            (false, false, false) => self.err(
                src,
                "spec.webhook",
                Code::InvalidAuth,
                "webhooks are HMAC-signed: set secretEnv or secretFile".into(),
            ),
            _ => {}
        }
        if !w.url.is_https() {
            self.warn(
                src,
                "spec.webhook.url",
                Code::InsecureTls,
                "webhook url uses plain http: alerts travel unencrypted".into(),
            );
        }
    }

    fn policy(&mut self, src: &Source, s: &HandshakePolicySpec) {
        let approving = s
            .approver_roles
            .iter()
            .filter(|r| **r != Role::Viewer)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u32;
        if s.approver_roles.contains(&Role::Viewer) {
            self.warn(
                src,
                "spec.approverRoles",
                Code::ImplausibleApprovals,
                "viewers cannot approve runs; their approvals never count".into(),
            );
        }
        if s.approvals > 0 && approving == 0 {
            self.warn(
                src,
                "spec.approvals",
                Code::ImplausibleApprovals,
                format!(
                    "policy needs {} approvals but none of its approverRoles can approve, so matching runs can never be applied",
                    s.approvals
                ),
            );
        } else if s.approvals > 5 || s.approvals > 2 * approving {
            self.warn(
                src,
                "spec.approvals",
                Code::ImplausibleApprovals,
                format!(
                    "policy needs {} distinct approvers from {} role(s){}; few homelabs or plants have that many, so runs may expire waiting",
                    s.approvals,
                    approving,
                    if s.allow_self_approval {
                        ""
                    } else {
                        " and the author cannot approve"
                    }
                ),
            );
        }
        if s.expires_after.is_some_and(|d| d.as_millis() == 0) {
            self.err(
                src,
                "spec.expiresAfter",
                Code::InvalidRange,
                "expiresAfter must be longer than 0".into(),
            );
        }
        for (i, w) in s.windows.iter().enumerate() {
            if w.start == w.end {
                self.err(
                    src,
                    &format!("spec.windows[{i}].end"),
                    Code::InvalidTimeWindow,
                    format!(
                        "time window starts and ends at {}: it is never open",
                        w.start
                    ),
                );
            }
        }
    }
}

/// Checks nodes of guests against their cluster's `defaultNode` (a cross-document rule that
/// needs the typed clusters).
fn missing_nodes(loaded: &Loaded, out: &mut Vec<Diagnostic>) {
    let mut default_node: HashMap<&str, bool> = HashMap::new();
    for doc in &loaded.documents {
        if let Some(t) = &doc.typed
            && let Spec::ProxmoxCluster(c) = &t.spec
        {
            default_node
                .entry(t.metadata.name.as_str())
                .or_insert(c.default_node.is_some());
        }
    }
    for doc in &loaded.documents {
        if let Some(t) = &doc.typed
            && let Spec::Guest(g) = &t.spec
            && g.node.is_none()
            && default_node.get(g.cluster.as_str()) == Some(&false)
        {
            out.push(doc.source.diagnostic_at_key(
                "spec",
                Severity::Error,
                Code::MissingNode,
                format!(
                    "guest names no node and cluster \"{}\" has no defaultNode",
                    g.cluster
                ),
            ));
        }
    }
}
