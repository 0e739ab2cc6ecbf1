//! The Kubernetes components a machine config names by image, and the rules of moving them to
//! another release: which jumps `talosctl upgrade-k8s` supports, and a config with some
//! components held at the release they run (the stages of a rolling Kubernetes upgrade).

use serde_json::Value;

use super::documents::{documents, is_v1alpha1, yaml_stream};
use super::version::KubernetesVersion;
use super::ConfigError;

/// A Kubernetes component whose image the machine config sets, in the order
/// `talosctl upgrade-k8s` moves them: the control-plane static pods, kube-proxy, the kubelets.
// Talos: pkg/cluster/kubernetes/talos_managed.go (v1.12.0) Upgrade: upgradeStaticPod for
// kube-apiserver, kube-controller-manager, kube-scheduler, then upgradeKubeProxy, then
// upgradeKubelet (kubelet.go), then syncManifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// `cluster.apiServer.image`, a static pod on control planes.
    ApiServer,
    /// `cluster.controllerManager.image`, a static pod on control planes.
    ControllerManager,
    /// `cluster.scheduler.image`, a static pod on control planes.
    Scheduler,
    /// `cluster.proxy.image`: the image of the kube-proxy DaemonSet Talos renders.
    Proxy,
    /// `machine.kubelet.image`, on every node.
    Kubelet,
}

impl Component {
    /// Every component, in upgrade order.
    pub const ALL: [Component; 5] = [
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
        Component::Proxy,
        Component::Kubelet,
    ];

    /// The name Kubernetes and Talos give it (`k8s-app` label of the static pods).
    pub fn name(self) -> &'static str {
        match self {
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
            Component::Proxy => "kube-proxy",
            Component::Kubelet => "kubelet",
        }
    }

    /// Whether it runs as a static pod of the control planes.
    pub fn is_static_pod(self) -> bool {
        matches!(
            self,
            Component::ApiServer | Component::ControllerManager | Component::Scheduler
        )
    }

    fn pointer(self) -> &'static str {
        match self {
            Component::ApiServer => "/cluster/apiServer/image",
            Component::ControllerManager => "/cluster/controllerManager/image",
            Component::Scheduler => "/cluster/scheduler/image",
            Component::Proxy => "/cluster/proxy/image",
            Component::Kubelet => "/machine/kubelet/image",
        }
    }
}

/// The tag after the image name: `v1.35.0` of `registry.k8s.io/kube-apiserver:v1.35.0`.
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let (repository, tag) = name.rsplit_once(':')?;
    // A colon in the registry part (`host:5000/image`) is not a tag.
    (!tag.contains('/') && !repository.is_empty()).then_some(tag)
}

/// The image of `component` in a machine config, when the config names one.
pub fn component_image(config: &str, component: Component) -> Option<String> {
    documents(config)
        .ok()?
        .iter()
        .find(|d| is_v1alpha1(d))?
        .pointer(component.pointer())
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The tag of `component`'s image in a machine config, when the config names one.
pub fn component_tag(config: &str, component: Component) -> Option<String> {
    image_tag(&component_image(config, component)?).map(str::to_string)
}

/// `config` with the image of each component in `held` set to the given tag (the image name,
/// a mirror from a patch included, is kept). Components the config does not name are left
/// out. The other documents and fields come out as the generator writes them.
pub fn with_component_tags(
    config: &str,
    held: &[(Component, String)],
) -> Result<String, ConfigError> {
    let mut docs = documents(config)?;
    for doc in docs.iter_mut().filter(|d| is_v1alpha1(d)) {
        for (component, tag) in held {
            let Some(slot) = doc.pointer_mut(component.pointer()) else {
                continue;
            };
            let Some(image) = slot.as_str() else { continue };
            let Some(current) = image_tag(image) else {
                continue;
            };
            // A digest pins the old image: the new tag goes without it.
            let named = image.split('@').next().unwrap_or(image);
            let name = &named[..named.len() - current.len()];
            *slot = Value::String(format!("{name}{tag}"));
        }
    }
    yaml_stream(&docs)
}

/// Refuses a Kubernetes change `talosctl upgrade-k8s` does not support: a jump over a minor
/// release, or back to an older minor. A new patch of the same minor either way is fine.
// go-kubernetes: kubernetes/upgrade/path.go `IsSupported` lists only "1.N->1.N" and
// "1.N->1.N+1"; talos_managed.go Upgrade refuses any other path ("unsupported upgrade path").
pub fn check_upgrade_path(from: &str, to: &str) -> Result<(), String> {
    let (Ok(old), Ok(new)) = (KubernetesVersion::parse(from), KubernetesVersion::parse(to)) else {
        return Ok(());
    };
    let (a, b) = (old.minor(), new.minor());
    if b == a || b == a + 1 {
        return Ok(());
    }
    let next = format!("v1.{}", a + 1);
    Err(if b < a {
        format!(
            "kubernetes_version goes back from {} to {}: Kubernetes cannot be downgraded to an older minor release \
             (its control plane may have written objects the old one cannot read). Keep 1.{a}, or rebuild the cluster.",
            old.tag(),
            new.tag()
        )
    } else {
        format!(
            "kubernetes_version jumps from {} to {}, over {}: Kubernetes upgrades one minor release at a time \
             (the version skew policy, and `talosctl upgrade-k8s`). Apply a {next}.x release first, then {}.",
            old.tag(),
            new.tag(),
            (a + 1..b)
                .map(|m| format!("1.{m}"))
                .collect::<Vec<_>>()
                .join(", "),
            new.tag()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "version: v1alpha1\nmachine:\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:v1.35.0\n\
cluster:\n  apiServer:\n    image: registry.k8s.io/kube-apiserver:v1.35.0\n  proxy:\n    image: mirror.lan:5000/kube-proxy:v1.35.0\n\
---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp-1\n";

    #[test]
    fn a_held_component_keeps_its_image_name_and_takes_the_old_tag() {
        let staged = with_component_tags(
            CONFIG,
            &[
                (Component::Kubelet, "v1.34.2".into()),
                (Component::Proxy, "v1.34.2".into()),
                (Component::Scheduler, "v1.34.2".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            component_tag(&staged, Component::Kubelet).as_deref(),
            Some("v1.34.2")
        );
        assert!(
            staged.contains("mirror.lan:5000/kube-proxy:v1.34.2"),
            "{staged}"
        );
        assert_eq!(
            component_tag(&staged, Component::ApiServer).as_deref(),
            Some("v1.35.0")
        );
        // A worker's config has no scheduler: nothing is added.
        assert_eq!(component_tag(&staged, Component::Scheduler), None);
        assert!(staged.contains("kind: HostnameConfig"));
    }

    #[test]
    fn holding_nothing_gives_the_config_back_unchanged() {
        let once = with_component_tags(CONFIG, &[]).unwrap();
        assert_eq!(with_component_tags(&once, &[]).unwrap(), once);
    }

    #[test]
    fn one_minor_up_or_a_patch_either_way_is_a_supported_path() {
        assert!(check_upgrade_path("v1.34.2", "v1.35.0").is_ok());
        assert!(check_upgrade_path("v1.35.2", "v1.35.0").is_ok());
    }

    #[test]
    fn a_skipped_minor_is_refused_naming_the_release_to_apply_first() {
        let e = check_upgrade_path("v1.33.1", "v1.35.0").unwrap_err();
        assert!(
            e.contains("kubernetes_version jumps from v1.33.1 to v1.35.0, over 1.34"),
            "{e}"
        );
        assert!(e.contains("v1.34.x release first"), "{e}");
    }

    #[test]
    fn an_older_minor_is_refused() {
        let e = check_upgrade_path("v1.35.0", "v1.34.2").unwrap_err();
        assert!(e.contains("cannot be downgraded"), "{e}");
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(image_tag("mirror.lan:5000/kube-proxy"), None);
        assert_eq!(
            image_tag("mirror.lan:5000/kube-proxy:v1.35.0"),
            Some("v1.35.0")
        );
    }
}
