//! JSON of Node, NodeList and the `Table` kubectl prints.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::NodeView;

fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Age the way kubectl shows it (`5s`, `3m`, `2h`, `4d`).
fn age(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn metadata(node: &NodeView) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    });
    if node.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({
        "name": node.name,
        "uid": format!("castle-lab-{}", node.name),
        "resourceVersion": "1",
        "creationTimestamp": rfc3339(node.created),
        "labels": labels,
    })
}

/// One `Node` object.
pub fn node(node: &NodeView) -> Value {
    let ready = if node.ready { "True" } else { "False" };
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": metadata(node),
        "spec": {},
        "status": {
            "conditions": [{
                "type": "Ready", "status": ready,
                "reason": if node.ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if node.ready { "kubelet is posting ready status" } else { "container runtime network not ready" },
                "lastHeartbeatTime": rfc3339(SystemTime::now()),
                "lastTransitionTime": rfc3339(node.created),
            }],
            "addresses": [
                { "type": "InternalIP", "address": node.internal_ip.to_string() },
                { "type": "Hostname", "address": node.name },
            ],
            "nodeInfo": {
                "kubeletVersion": node.kubelet_version,
                "kubeProxyVersion": node.kubelet_version,
                "osImage": node.os_image,
                "kernelVersion": "6.12.0-talos",
                "containerRuntimeVersion": "containerd://2.0.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

/// A `NodeList`.
pub fn node_list(nodes: &[NodeView]) -> Value {
    json!({
        "kind": "NodeList", "apiVersion": "v1",
        "metadata": { "resourceVersion": "1" },
        "items": nodes.iter().map(node).collect::<Vec<_>>(),
    })
}

/// A `meta.k8s.io/v1` `Table` with kube-apiserver's node columns.
pub fn table(nodes: &[NodeView]) -> Value {
    let column = |name: &str, ty: &str, format: &str, priority: u8, description: &str| json!({ "name": name, "type": ty, "format": format, "description": description, "priority": priority });
    let rows: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let roles = if n.control_plane { "control-plane" } else { "<none>" };
            let status = if n.ready { "Ready" } else { "NotReady" };
            json!({
                "cells": [
                    n.name, status, roles, age(n.created), n.kubelet_version,
                    n.internal_ip.to_string(), "<none>", n.os_image, "6.12.0-talos", "containerd://2.0.0",
                ],
                "object": {
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata(n),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": "1" },
        "columnDefinitions": [
            column("Name", "string", "name", 0, "Name must be unique within a namespace."),
            column("Status", "string", "", 0, "The status of the node"),
            column("Roles", "string", "", 0, "The roles of the node"),
            column("Age", "string", "", 0, "CreationTimestamp of the node."),
            column("Version", "string", "", 0, "Kubelet Version reported by the node."),
            column("Internal-IP", "string", "", 1, "List of internal IPs."),
            column("External-IP", "string", "", 1, "List of external IPs."),
            column("OS-Image", "string", "", 1, "OS Image reported by the node."),
            column("Kernel-Version", "string", "", 1, "Kernel Version reported by the node."),
            column("Container-Runtime", "string", "", 1, "Container Runtime Version reported by the node."),
        ],
        "rows": rows,
    })
}
