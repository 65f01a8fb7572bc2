#!/usr/bin/env python3
"""Converge GUESTS QEMU guests with plain proxmoxer, as a user without a GitOps tool would.

List the cluster's guests once; create each missing guest and wait for its task; for each
existing guest read its config and set what differs (name, cores, memory); start each guest
that is not running and wait for its task. One request at a time, as such scripts are written.

Environment: PVE_PORT (the cluster's port on 127.0.0.1), PVE_TOKEN (the secret of the token
mycopod@pve!gitops), GUESTS (default 100), FIRST_VMID (default 1000), NODE (default pve1).
Run by `cargo bench -p mycopod-tests --bench side_by_side`; see BENCHMARKS.md.
"""
import os
import sys

import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

urllib3.disable_warnings()

api = ProxmoxAPI(
    "127.0.0.1",
    port=int(os.environ["PVE_PORT"]),
    user="mycopod@pve",
    token_name="gitops",
    token_value=os.environ["PVE_TOKEN"],
    verify_ssl=False,
    timeout=30,
)
count = int(os.environ.get("GUESTS", "100"))
first = int(os.environ.get("FIRST_VMID", "1000"))
node = os.environ.get("NODE", "pve1")


def wait(upid):
    status = Tasks.blocking_status(api, upid, timeout=60, polling_interval=0.05)
    if status is None or status.get("exitstatus") != "OK":
        sys.exit(f"task {upid} failed: {status}")


existing = {r["vmid"]: r for r in api.cluster.resources.get(type="vm")}
changed = 0
for vmid in range(first, first + count):
    want = {"name": f"vm{vmid}", "cores": 1, "memory": 512}
    guest = existing.get(vmid)
    if guest is None:
        wait(
            api.nodes(node).qemu.create(
                vmid=vmid,
                net0="virtio,bridge=vmbr0",
                scsi0="local-lvm:8",
                **want,
            )
        )
        wait(api.nodes(node).qemu(vmid).status.start.post())
        changed += 1
        continue
    config = api.nodes(guest["node"]).qemu(vmid).config.get()
    diff = {k: v for k, v in want.items() if str(config.get(k)) != str(v)}
    if diff:
        api.nodes(guest["node"]).qemu(vmid).config.put(**diff)
        changed += 1
    if guest.get("status") != "running":
        wait(api.nodes(guest["node"]).qemu(vmid).status.start.post())
        changed += 1
print(f"proxmoxer: {changed} changes")
