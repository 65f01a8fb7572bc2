//! One test per diagnostic class: each renders the human output for a small repository and
//! compares it with a snapshot, so the message, the line and the column are all pinned.
//! Update snapshots with `UPDATE_EXPECT=1 cargo test -p mycopod-specs --test diagnostics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use expect_test::{Expect, expect};
use mycopod_specs::{Code, load_str, render::render_human, validate};

fn check(text: &str, expected: Expect) {
    let loaded = load_str("repo.yaml", text.strip_prefix('\n').unwrap_or(text));
    let diagnostics = validate(&loaded);
    expected.assert_eq(&render_human(&diagnostics, &loaded));
}

#[test]
fn yaml_syntax_should_be_reported_for_a_syntax_error() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: a
spec: {text: hi}
"#,
        expect![[r#"
            error[yaml-syntax]: yaml syntax error: while parsing a flow mapping, did not find expected ',' or '}'
             --> repo.yaml:4:5
              |
            4 | spec: {text: hi}
              |     ^

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn duplicate_key_should_be_reported_for_a_key_given_twice() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: a}
spec:
  text: hi
  text: again
"#,
        expect![[r#"
            error[duplicate-key]: duplicate key "text"
             --> repo.yaml:6:3
              |
            6 |   text: again
              |   ^^^^
              = field: spec.text

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_type_should_be_reported_for_a_list_where_a_number_belongs() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "a@pve!b", secretEnv: T}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: qemu
  vmid: 120
  cores: [2]
"#,
        expect![[r#"
            error[invalid-type]: invalid value: expected u32, found sequence
              --> repo.yaml:16:10
               |
            16 |   cores: [2]
               |          ^
               = field: spec.cores

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn unknown_field_should_be_reported_for_a_misspelt_field_with_a_suggestion() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: qemu
  vmid: 120
  memroy: 2GiB
"#,
        expect![[r#"
            error[unknown-field]: unknown field "memroy", did you mean "memory"?
             --> repo.yaml:8:3
              |
            8 |   memroy: 2GiB
              |   ^^^^^^
              = field: spec.memroy

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn missing_field_should_be_reported_for_a_guest_without_cluster() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  type: qemu
  vmid: 120
"#,
        expect![[r#"
            error[missing-field]: missing field "cluster" in spec
             --> repo.yaml:4:1
              |
            4 | spec:
              | ^^^^
              = field: spec

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn unknown_variant_should_be_reported_for_an_unknown_guest_type() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: kvm
"#,
        expect![[r#"
            error[unknown-variant]: unknown value "kvm", expected one of: qemu, lxc
             --> repo.yaml:6:9
              |
            6 |   type: kvm
              |         ^^^
              = field: spec.type

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn unknown_api_version_should_be_reported_for_a_wrong_apiversion() {
    check(
        r#"
apiVersion: mycopod/v2
kind: Declaration
metadata: {name: a}
spec: {text: hi}
"#,
        expect![[r#"
            error[unknown-api-version]: unknown apiVersion "mycopod/v2", expected "mycopod/v1"
             --> repo.yaml:1:13
              |
            1 | apiVersion: mycopod/v2
              |             ^^^^^^^^^^
              = field: apiVersion

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn unknown_kind_should_be_reported_for_a_misspelt_kind() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guset
metadata: {name: a}
spec: {}
"#,
        expect![[r#"
            error[unknown-kind]: unknown kind "Guset", did you mean "Guest"?
             --> repo.yaml:2:7
              |
            2 | kind: Guset
              |       ^^^^^
              = field: kind

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_name_should_be_reported_for_a_name_that_is_no_dns_label() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: My_Wiki}
spec: {text: hi}
"#,
        expect![[r#"
            error[invalid-name]: invalid name "My_Wiki": use only lowercase letters, digits and '-' (a DNS label)
             --> repo.yaml:3:18
              |
            3 | metadata: {name: My_Wiki}
              |                  ^^^^^^^
              = field: metadata.name

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_vmid_should_be_reported_for_a_vmid_below_100() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: qemu
  vmid: 42
"#,
        expect![[r#"
            error[invalid-vmid]: invalid vmid 42: must be between 100 and 999999999
             --> repo.yaml:7:9
              |
            7 |   vmid: 42
              |         ^^
              = field: spec.vmid

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_byte_size_should_be_reported_for_a_decimal_byte_unit() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: qemu
  vmid: 120
  memory: 4GB
"#,
        expect![[r#"
            error[invalid-byte-size]: invalid byte size "4GB": expected a number with a unit such as 512MiB, 4GiB or 32G
             --> repo.yaml:8:11
              |
            8 |   memory: 4GB
              |           ^^^
              = field: spec.memory

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_duration_should_be_reported_for_a_duration_in_words() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  pollInterval: 5 minutes
"#,
        expect![[r#"
            error[invalid-duration]: invalid duration "5 minutes": expected a number followed by ms, s, m, h or d (like 500ms, 10s, 5m, 2h, 1d)
             --> repo.yaml:6:17
              |
            6 |   pollInterval: 5 minutes
              |                 ^^^^^^^^^
              = field: spec.pollInterval

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_address_should_be_reported_for_an_address_past_65535() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow, table: holding, address: 70000, type: f32}
"#,
        expect![[r#"
            error[invalid-address]: invalid register address 70000: must be between 0 and 65535
             --> repo.yaml:7:45
              |
            7 |     - {name: flow, table: holding, address: 70000, type: f32}
              |                                             ^^^^^
              = field: spec.registers[0].address

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_time_window_should_be_reported_for_a_malformed_time_and_an_empty_window() {
    check(
        r#"
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata: {name: p}
spec:
  match: {verbs: [delete]}
  windows:
    - {start: "08:00", end: "08:00"}
---
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata: {name: q}
spec:
  match: {verbs: [delete]}
  windows:
    - {start: "8am", end: "17:00"}
"#,
        expect![[r#"
            error[invalid-time-window]: time window starts and ends at 08:00: it is never open
             --> repo.yaml:7:29
              |
            7 |     - {start: "08:00", end: "08:00"}
              |                             ^^^^^^^
              = field: spec.windows[0].end

            error[invalid-time-window]: invalid time of day "8am": expected HH:MM between 00:00 and 24:00
              --> repo.yaml:15:15
               |
            15 |     - {start: "8am", end: "17:00"}
               |               ^^^^^
               = field: spec.windows[0].start

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_timezone_should_be_reported_for_an_unknown_time_zone() {
    check(
        r#"
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata: {name: p}
spec:
  match: {verbs: [delete]}
  windows:
    - {start: "08:00", end: "17:00", timezone: Europe/Springfield}
"#,
        expect![[r#"
            error[invalid-timezone]: invalid time zone "Europe/Springfield": expected an IANA zone name such as Europe/Berlin or UTC
             --> repo.yaml:7:48
              |
            7 |     - {start: "08:00", end: "17:00", timezone: Europe/Springfield}
              |                                                ^^^^^^^^^^^^^^^^^^
              = field: spec.windows[0].timezone

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_url_should_be_reported_for_an_endpoint_without_scheme() {
    check(
        r#"
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {name: ops}
spec:
  webhook: {url: hooks.example/x, secretEnv: HOOK}
"#,
        expect![[r#"
            error[invalid-url]: invalid url "hooks.example/x": relative URL without a base
             --> repo.yaml:5:18
              |
            5 |   webhook: {url: hooks.example/x, secretEnv: HOOK}
              |                  ^^^^^^^^^^^^^^^
              = field: spec.webhook.url

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_range_should_be_reported_for_min_above_max_and_a_reversed_band() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: cutoff, table: holding, address: 0, type: f32, writable: true, min: 5, max: 1}
---
apiVersion: mycopod/v1
kind: AlertRule
metadata: {name: band}
spec:
  device: fm-1
  register: cutoff
  condition: {outside: [9, 3]}
"#,
        expect![[r#"
            error[invalid-range]: min 5 is above max 1
             --> repo.yaml:7:82
              |
            7 |     - {name: cutoff, table: holding, address: 0, type: f32, writable: true, min: 5, max: 1}
              |                                                                                  ^
              = field: spec.registers[0].min

            error[invalid-range]: outside [9, 3] needs the low bound first
              --> repo.yaml:15:24
               |
            15 |   condition: {outside: [9, 3]}
               |                        ^
               = field: spec.condition.outside

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn duplicate_name_should_be_reported_for_two_guests_named_alike() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: a}
spec: {text: hi}
---
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: a}
spec: {text: again}
"#,
        expect![[r#"
            error[duplicate-name]: duplicate Declaration name "a", first defined at repo.yaml:3:18
             --> repo.yaml:8:18
              |
            8 | metadata: {name: a}
              |                  ^
              = field: metadata.name

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn duplicate_vmid_should_be_reported_for_two_guests_with_one_vmid() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "a@pve!b", secretEnv: T}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec: {cluster: home, type: qemu, vmid: 120}
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: db}
spec: {cluster: home, type: qemu, vmid: 120}
"#,
        expect![[r#"
            error[duplicate-vmid]: vmid 120 is already used in cluster "home" by repo.yaml:12:41
              --> repo.yaml:17:41
               |
            17 | spec: {cluster: home, type: qemu, vmid: 120}
               |                                         ^^^
               = field: spec.vmid

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn duplicate_register_should_be_reported_for_two_registers_named_alike() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow, table: holding, address: 0, type: f32}
    - {name: flow, table: input, address: 0, type: f32}
"#,
        expect![[r#"
            error[duplicate-register]: duplicate register name "flow", also at spec.registers[0]
             --> repo.yaml:8:14
              |
            8 |     - {name: flow, table: input, address: 0, type: f32}
              |              ^^^^
              = field: spec.registers[1].name

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn unknown_reference_should_be_reported_for_a_dangling_cluster_register_and_channel() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec: {cluster: hom, type: qemu, vmid: 120}
---
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow_rate, table: holding, address: 0, type: f32}
---
apiVersion: mycopod/v1
kind: AlertRule
metadata: {name: low}
spec:
  device: fm-1
  register: flow_rte
  condition: {below: 2}
  notify: [ops]
"#,
        expect![[r#"
            error[unknown-reference]: unknown ProxmoxCluster "hom" (there is no ProxmoxCluster in this repository)
             --> repo.yaml:4:17
              |
            4 | spec: {cluster: hom, type: qemu, vmid: 120}
              |                 ^^^
              = field: spec.cluster

            error[unknown-reference]: unknown register "flow_rte" on ModbusDevice "fm-1", did you mean "flow_rate"?
              --> repo.yaml:19:13
               |
            19 |   register: flow_rte
               |             ^^^^^^^^
               = field: spec.register

            error[unknown-reference]: unknown NotificationChannel "ops" (there is no NotificationChannel in this repository)
              --> repo.yaml:21:12
               |
            21 |   notify: [ops]
               |            ^^^
               = field: spec.notify[0]

            3 errors, 0 warnings
        "#]],
    );
}

#[test]
fn register_overlap_should_be_reported_for_a_float_over_a_word() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow, table: holding, address: 0, type: f32}
    - {name: status, table: holding, address: 1, type: u16}
"#,
        expect![[r#"
            error[register-overlap]: register "status" (1..=1) overlaps "flow" (0..=1) in the holding table
             --> repo.yaml:8:47
              |
            8 |     - {name: status, table: holding, address: 1, type: u16}
              |                                               ^
              = field: spec.registers[1].address

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn register_out_of_range_should_be_reported_for_a_double_at_the_end_of_the_map() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: total, table: input, address: 65534, type: f64}
"#,
        expect![[r#"
            error[register-out-of-range]: register "total" at 65534 with width 4 runs past address 65535 (to 65537)
             --> repo.yaml:7:44
              |
            7 |     - {name: total, table: input, address: 65534, type: f64}
              |                                            ^^^^^
              = field: spec.registers[0].address

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn register_too_short_should_be_reported_for_a_float_with_length_1() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow, table: holding, address: 0, type: f32, length: 1}
    - {name: tag, table: holding, address: 10, type: string}
"#,
        expect![[r#"
            error[register-too-short]: length 1 is too short for f32, which needs 2 registers
             --> repo.yaml:7:67
              |
            7 |     - {name: flow, table: holding, address: 0, type: f32, length: 1}
              |                                                                   ^
              = field: spec.registers[0].length

            error[register-too-short]: a string register needs length (the number of registers, two characters each)
             --> repo.yaml:8:54
              |
            8 |     - {name: tag, table: holding, address: 10, type: string}
              |                                                      ^^^^^^
              = field: spec.registers[1].type

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn register_table_should_be_reported_for_a_float_coil_and_a_writable_input_register() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: flow, table: coil, address: 0, type: f32}
    - {name: level, table: input, address: 0, type: u16, writable: true}
"#,
        expect![[r#"
            error[register-table]: a coil table holds single bits: use type bool, not f32
             --> repo.yaml:7:51
              |
            7 |     - {name: flow, table: coil, address: 0, type: f32}
              |                                                   ^^^
              = field: spec.registers[0].type

            error[register-table]: input registers are read-only in Modbus, so this register cannot be writable
             --> repo.yaml:8:58
              |
            8 |     - {name: level, table: input, address: 0, type: u16, writable: true}
              |                                                          ^^^^^^^^
              = field: spec.registers[1].writable

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn setpoint_not_writable_should_be_reported_for_a_setpoint_on_a_read_only_register() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: cutoff, table: holding, address: 0, type: f32}
  setpoints:
    cutoff: 0.5
"#,
        expect![[r#"
            error[setpoint-not-writable]: register "cutoff" is not writable (set writable: true on spec.registers[0] if the device accepts writes)
             --> repo.yaml:9:5
              |
            9 |     cutoff: 0.5
              |     ^^^^^^
              = field: spec.setpoints.cutoff

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn setpoint_out_of_range_should_be_reported_for_a_setpoint_above_max() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: cutoff, table: holding, address: 0, type: f32, writable: true, min: 0, max: 5}
  setpoints:
    cutoff: 7.5
"#,
        expect![[r#"
            error[setpoint-out-of-range]: setpoint 7.5 for "cutoff" is outside its limits [0, 5]
             --> repo.yaml:9:13
              |
            9 |     cutoff: 7.5
              |             ^^^
              = field: spec.setpoints.cutoff

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn setpoint_type_should_be_reported_for_a_word_for_a_number() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: cutoff, table: holding, address: 0, type: f32, writable: true}
  setpoints:
    cutoff: low
"#,
        expect![[r#"
            error[setpoint-type]: setpoint for "cutoff" does not fit its type f32
             --> repo.yaml:9:13
              |
            9 |     cutoff: low
              |             ^^^
              = field: spec.setpoints.cutoff

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn non_numeric_register_should_be_reported_for_a_threshold_on_a_bool() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: running, table: coil, address: 0, type: bool}
---
apiVersion: mycopod/v1
kind: AlertRule
metadata: {name: high}
spec:
  device: fm-1
  register: running
  condition: {above: 0.5}
"#,
        expect![[r#"
            error[non-numeric-register]: register "running" is bool, not a number: only offline conditions apply to it
              --> repo.yaml:15:14
               |
            15 |   condition: {above: 0.5}
               |              ^
               = field: spec.condition

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn inline_secret_should_be_reported_for_a_token_secret_in_the_file() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "mycopod@pve!gitops", secret: 3f2a9c1e-0b7d-4f1e-9a43-5c6d7e8f9a0b}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {name: ops}
spec:
  webhook: {url: "https://hooks.example/x", secretEnv: "s3cr3t-v@lue"}
"#,
        expect![[r#"
            error[inline-secret]: secret written inline: put the secret in an environment variable or a file and use secretEnv or secretFile
             --> repo.yaml:6:41
              |
            6 |   auth: {tokenId: "mycopod@pve!gitops", secret: 3f2a9c1e-0b7d-4f1e-9a43-5c6d7e8f9a0b}
              |                                         ^^^^^^
              = field: spec.auth.secret

            error[inline-secret]: this is not an environment variable name (letters, digits and '_'); if it is the secret itself, put the secret in an environment variable or a file
              --> repo.yaml:13:56
               |
            13 |   webhook: {url: "https://hooks.example/x", secretEnv: "s3cr3t-v@lue"}
               |                                                        ^^^^^^^^^^^^^^
               = field: spec.webhook.secretEnv

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn wrong_guest_type_should_be_reported_for_qemu_fields_on_a_container() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "a@pve!b", secretEnv: T}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: dns}
spec:
  cluster: home
  type: lxc
  vmid: 200
  clone: {from: 9000}
  networks:
    - {model: virtio, bridge: vmbr0}
"#,
        expect![[r#"
            error[wrong-guest-type]: "clone" applies to qemu guests only, this guest is lxc (lxc guests use hostname, rootfs, mountPoints and ostemplate)
              --> repo.yaml:16:3
               |
            16 |   clone: {from: 9000}
               |   ^^^^^
               = field: spec.clone

            error[wrong-guest-type]: network "model" applies to qemu guests only, this guest is lxc
              --> repo.yaml:18:8
               |
            18 |     - {model: virtio, bridge: vmbr0}
               |        ^^^^^
               = field: spec.networks[0].model

            2 errors, 0 warnings
        "#]],
    );
}

#[test]
fn missing_node_should_be_reported_for_no_node_anywhere() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "a@pve!b", secretEnv: T}
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec: {cluster: home, type: qemu, vmid: 120}
"#,
        expect![[r#"
            error[missing-node]: guest names no node and cluster "home" has no defaultNode
              --> repo.yaml:11:1
               |
            11 | spec: {cluster: home, type: qemu, vmid: 120}
               | ^^^^
               = field: spec

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn invalid_auth_should_be_reported_for_a_token_without_its_secret_reference() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "mycopod@pve!gitops"}
  defaultNode: pve1
"#,
        expect![[r#"
            error[invalid-auth]: an API token needs exactly one of secretEnv or secretFile
             --> repo.yaml:6:9
              |
            6 |   auth: {tokenId: "mycopod@pve!gitops"}
              |         ^
              = field: spec.auth

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn insecure_tls_should_be_reported_for_verification_turned_off() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {user: root@pam, passwordEnv: PVE_PASS}
  tls: {insecureSkipVerify: true}
  defaultNode: pve1
"#,
        expect![[r#"
            warning[insecure-tls]: TLS verification is off: anyone on the network path can impersonate the cluster; prefer caFile
             --> repo.yaml:7:29
              |
            7 |   tls: {insecureSkipVerify: true}
              |                             ^^^^
              = field: spec.tls.insecureSkipVerify

            0 errors, 1 warning
        "#]],
    );
}

#[test]
fn missing_vmid_should_be_reported_for_a_guest_without_vmid() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "a@pve!b", secretEnv: T}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec:
  cluster: home
  type: qemu
"#,
        expect![[r#"
            warning[missing-vmid]: guest has no vmid: Proxmox VE will choose one, and the controller cannot reliably recognise the guest afterwards
              --> repo.yaml:12:1
               |
            12 | spec:
               | ^^^^
               = field: spec

            0 errors, 1 warning
        "#]],
    );
}

#[test]
fn implausible_approvals_should_be_reported_for_more_approvals_than_admins() {
    check(
        r#"
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata: {name: p}
spec:
  match: {verbs: [delete]}
  approvals: 4
  approverRoles: [admin]
"#,
        expect![[r#"
            warning[implausible-approvals]: policy needs 4 distinct approvers from 1 role(s) and the author cannot approve; few homelabs or plants have that many, so runs may expire waiting
             --> repo.yaml:6:14
              |
            6 |   approvals: 4
              |              ^
              = field: spec.approvals

            0 errors, 1 warning
        "#]],
    );
}

#[test]
fn empty_declaration_should_be_reported_for_blank_text() {
    check(
        r#"
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: a}
spec:
  text: "  "
"#,
        expect![[r#"
            error[empty-declaration]: declaration text is empty
             --> repo.yaml:5:9
              |
            5 |   text: "  "
              |         ^^^^
              = field: spec.text

            1 error, 0 warnings
        "#]],
    );
}

/// The two secret codes are raised by the server (`plan`, `serve`), which knows its
/// `[[secrets]]` list; they point at the field and render like every other finding.
#[test]
fn secret_findings_from_the_server_should_point_at_the_field_that_names_the_secret() {
    let text = "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {name: thief}\nspec:\n  endpoint: http://203.0.113.9:8006\n  auth: {tokenId: \"x@pve!y\", secretEnv: PVE_TOKEN}\n  defaultNode: pve1\n";
    let loaded = load_str("repo.yaml", text);
    let checked = mycopod_specs::check(&loaded).unwrap();
    let source = &checked.desired.clusters[0].source;
    let findings = vec![
        source.diagnostic(
            "spec.auth.secretEnv",
            mycopod_specs::Severity::Error,
            Code::SecretDestination,
            "environment variable PVE_TOKEN may be sent only to https://pve.lan:8006, not to http://203.0.113.9:8006; nothing is sent",
        ),
        source.diagnostic(
            "spec.auth.secretEnv",
            mycopod_specs::Severity::Error,
            Code::SecretNotAllowed,
            "environment variable PVE_TOKEN is not listed in the server's [[secrets]] configuration",
        ),
    ];
    expect![[r#"
        error[secret-destination]: environment variable PVE_TOKEN may be sent only to https://pve.lan:8006, not to http://203.0.113.9:8006; nothing is sent
         --> repo.yaml:6:41
          |
        6 |   auth: {tokenId: "x@pve!y", secretEnv: PVE_TOKEN}
          |                                         ^^^^^^^^^
          = field: spec.auth.secretEnv

        error[secret-not-allowed]: environment variable PVE_TOKEN is not listed in the server's [[secrets]] configuration
         --> repo.yaml:6:41
          |
        6 |   auth: {tokenId: "x@pve!y", secretEnv: PVE_TOKEN}
          |                                         ^^^^^^^^^
          = field: spec.auth.secretEnv

        2 errors, 0 warnings
    "#]].assert_eq(&render_human(&findings, &loaded));
}

#[test]
fn every_diagnostic_code_should_have_a_snapshot_in_this_file() {
    let this = include_str!("diagnostics.rs");
    for code in Code::ALL {
        let header_error = format!("error[{}]", code.as_str());
        let header_warning = format!("warning[{}]", code.as_str());
        assert!(
            this.contains(&header_error) || this.contains(&header_warning),
            "no snapshot shows {code}"
        );
    }
}

#[test]
fn yaml_syntax_should_be_reported_for_aliases_that_expand_exponentially() {
    // Regression guard: "billion laughs" must end in a finding, not in exhausted memory.
    let mut text = String::from(
        "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: a}\nspec:\n  text: hi\n  kinds: &l0 [Guest, Guest, Guest, Guest, Guest, Guest, Guest, Guest, Guest, Guest]\n",
    );
    for i in 1..9 {
        let prev = i - 1;
        text.push_str(&format!(
            "  k{i}: &l{i} [*l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}, *l{prev}]\n"
        ));
    }
    let loaded = load_str("repo.yaml", &text);
    let diagnostics = validate(&loaded);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].code, Code::YamlSyntax);
    assert!(
        diagnostics[0]
            .message
            .starts_with("aliases expand to too many nodes")
    );
}

#[test]
fn setpoint_out_of_range_should_be_reported_for_a_value_that_does_not_fit_the_raw_type() {
    check(
        r#"
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21}}
  registers:
    - {name: level, table: holding, address: 0, type: u16, scale: 0.01, writable: true}
  setpoints:
    level: 700
"#,
        expect![[r#"
            error[setpoint-out-of-range]: setpoint 700 for "level" needs the raw value 70000, which does not fit u16
             --> repo.yaml:9:12
              |
            9 |     level: 700
              |            ^^^
              = field: spec.setpoints.level

            1 error, 0 warnings
        "#]],
    );
}

#[test]
fn not_read_should_be_reported_for_what_leads_out_of_the_folder_and_never_read_it() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.txt"),
        "password: hunter2-from-outside\n",
    )
    .unwrap();
    std::fs::write(outside.path().join("more.yaml"), "hunter2: also-outside\n").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let link = |to: &std::path::Path, name: &str| {
        std::os::unix::fs::symlink(to, repo.path().join(name)).unwrap();
    };
    link(&outside.path().join("secret.txt"), "leak.yaml");
    link(std::path::Path::new("/dev/zero"), "zero.yaml");
    link(outside.path(), "linked");
    link(&repo.path().join("gone.yaml"), "dangling.yml");
    let fifo = repo.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A link to a file of the folder's own is read as the file it names.
    std::fs::create_dir(repo.path().join("shared")).unwrap();
    std::fs::write(
        repo.path().join("shared/declaration.txt"),
        "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: a}\nspec: {text: hi}\n",
    )
    .unwrap();
    link(&repo.path().join("shared/declaration.txt"), "same.yaml");

    let loaded = mycopod_specs::load_path(repo.path()).unwrap();
    let findings = validate(&loaded);
    let root = format!("{}/", repo.path().display());
    let text = render_human(&findings, &loaded).replace(&root, "");
    expect![[r#"
        error[not-read]: not read: a symlink that leads nowhere
         --> dangling.yml

        error[not-read]: not read: a symlink that leads outside the folder
         --> leak.yaml

        error[not-read]: not read: a symlink that leads outside the folder
         --> linked

        error[not-read]: not read: not a regular file (a device, FIFO or socket)
         --> pipe.yaml

        error[not-read]: not read: a symlink that leads outside the folder
         --> zero.yaml

        5 errors, 0 warnings
    "#]]
    .assert_eq(&text);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        loaded.files.iter().all(|f| !f.text.contains("hunter2")),
        "nothing outside the folder was read"
    );
    let read: Vec<&str> = loaded.files.iter().map(|f| &*f.name).collect();
    assert_eq!(
        read,
        [format!("{root}same.yaml")],
        "only the link inside is read"
    );
    assert_eq!(loaded.documents.len(), 1);
}

#[test]
fn limit_exceeded_should_be_reported_at_the_first_key_past_the_limit() {
    let text = "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: a}\nspec:\n  text: hi\n  kinds: [Guest]\n  labels: {a: 1, b: 2, c: 3, d: 4}\n";
    let limits = mycopod_specs::Limits {
        keys_per_mapping: 3,
        ..mycopod_specs::Limits::default()
    };
    let mut loaded = mycopod_specs::Loaded::with_limits(limits);
    loaded.add_str("repo.yaml", text.to_owned());
    let diagnostics = validate(&loaded);
    expect![[r#"
        error[limit-exceeded]: the mapping at line 7 has more than 3 keys (limits.keys_per_mapping); the document is not read further
         --> repo.yaml:7:30
          |
        7 |   labels: {a: 1, b: 2, c: 3, d: 4}
          |                              ^
          = field: spec.labels

        1 error, 0 warnings
    "#]].assert_eq(&render_human(&diagnostics, &loaded));
}
