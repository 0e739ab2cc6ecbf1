# The import id is the path of a file written by talosctl gen secrets.
terraform import castle_talos_secrets.home ./secrets.yaml
