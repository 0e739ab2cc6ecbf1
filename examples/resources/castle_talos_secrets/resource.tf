# The cluster's identity, generated once and stored before any node sees it. For a cluster that
# already runs, set secrets_yaml = file("secrets.yaml") (from talosctl gen secrets) instead.
resource "castle_talos_secrets" "home" {}
