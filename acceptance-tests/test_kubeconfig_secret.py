"""Acceptance scenarios of castle_kubeconfig_secret, against the Infisical lab.

Fixtures (acceptance-tests/conftest.py): `tf` builds a Terraform working dir, `infisical_lab`
runs `castle-lab infisical` and exposes its identity and /__lab/ helpers.
"""

import pytest

pytestmark = pytest.mark.acceptance

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: castle
  cluster:
    server: https://10.0.0.10:6443
contexts:
- name: admin@castle
  context:
    cluster: castle
    user: admin@castle
current-context: admin@castle
users:
- name: admin@castle
  user:
    token: lab-not-a-real-token
"""


def trimmed(value):
    """What Infisical stores: trimmed, keeping one trailing newline if there was one."""
    inner = value.strip()
    return inner + "\n" if value.endswith("\n") and inner else inner


def main_tf(lab, kubeconfig=KUBECONFIG, path="/clusters/home", extra=""):
    return f"""
terraform {{
  required_providers {{
    castle = {{ source = "castle-lab/castle" }}
  }}
}}

provider "castle" {{
  infisical {{
    host          = "{lab.url}"
    client_id     = "{lab.client_id}"
    client_secret = "{lab.client_secret}"
  }}
}}

resource "castle_kubeconfig_secret" "home" {{
  project_id  = "{lab.project_id}"
  environment = "{lab.environment}"
  path        = "{path}"
  kubeconfig  = <<-EOT
{kubeconfig}EOT
{extra}
}}

output "id" {{
  value = castle_kubeconfig_secret.home.id
}}
"""


def stored(lab, key="KUBECONFIG", path="/clusters/home"):
    found = [s for s in lab.secrets() if s["key"] == key and s["path"] == path]
    return found[0] if found else None


def test_kubeconfig_is_uploaded_and_a_second_plan_is_empty(tf, infisical_lab):
    work = tf("upload")
    work.write(main_tf(infisical_lab))
    work.apply()
    secret = stored(infisical_lab)
    assert secret is not None
    assert secret["value"] == trimmed(KUBECONFIG)
    assert work.output("id") == f"{infisical_lab.project_id}:{infisical_lab.environment}:/clusters/home:KUBECONFIG"
    assert work.plan_is_empty()


def test_changed_input_updates_the_secret(tf, infisical_lab):
    work = tf("update")
    work.write(main_tf(infisical_lab))
    work.apply()
    changed = KUBECONFIG.replace("10.0.0.10", "10.0.0.11")
    work.write(main_tf(infisical_lab, kubeconfig=changed))
    work.apply()
    secret = stored(infisical_lab)
    assert secret["value"] == trimmed(changed)
    assert secret["version"] == 2
    assert work.plan_is_empty()


def test_out_of_band_change_is_restored(tf, infisical_lab):
    work = tf("restore")
    work.write(main_tf(infisical_lab))
    work.apply()
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", "tampered")
    assert not work.plan_is_empty()
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    assert work.plan_is_empty()


def test_out_of_band_delete_is_recreated(tf, infisical_lab):
    work = tf("recreate")
    work.write(main_tf(infisical_lab))
    work.apply()
    infisical_lab.delete_secret("/clusters/home", "KUBECONFIG")
    assert stored(infisical_lab) is None
    assert not work.plan_is_empty()
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)
    assert work.plan_is_empty()


def test_import_then_plan_is_empty(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", KUBECONFIG)
    work = tf("import")
    work.write(main_tf(infisical_lab))
    import_id = f"{infisical_lab.project_id}:{infisical_lab.environment}:/clusters/home:KUBECONFIG"
    work.import_("castle_kubeconfig_secret.home", import_id)
    assert work.plan_is_empty()


def test_existing_secret_with_the_same_value_is_adopted(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", KUBECONFIG + "\n\n")
    work = tf("adopt")
    work.write(main_tf(infisical_lab))
    work.apply()
    assert work.plan_is_empty()


def test_existing_secret_with_another_value_names_the_import_command(tf, infisical_lab):
    infisical_lab.set_secret("/clusters/home", "KUBECONFIG", "someone else's")
    work = tf("conflict")
    work.write(main_tf(infisical_lab))
    result = work.apply(expect_fail=True)
    assert "terraform import" in str(result)
    assert stored(infisical_lab)["value"] == "someone else's"


def test_destroy_removes_the_secrets(tf, infisical_lab):
    work = tf("destroy")
    talos = """
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = "context: castle\\n"
"""
    work.write(main_tf(infisical_lab, extra=talos))
    work.apply()
    assert stored(infisical_lab, "TALOSCONFIG")["value"] == "context: castle\n"
    work.destroy()
    assert stored(infisical_lab) is None
    assert stored(infisical_lab, "TALOSCONFIG") is None


def test_rate_limits_are_waited_out(tf, infisical_lab):
    work = tf("rate-limit")
    work.write(main_tf(infisical_lab))
    infisical_lab.rate_limit(3, 1)
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(KUBECONFIG)


def test_expired_tokens_are_replaced(tf, infisical_lab):
    work = tf("token-expiry")
    work.write(main_tf(infisical_lab))
    work.apply()
    infisical_lab.expire_tokens()
    changed = KUBECONFIG.replace("10.0.0.10", "10.0.0.12")
    work.write(main_tf(infisical_lab, kubeconfig=changed))
    work.apply()
    assert stored(infisical_lab)["value"] == trimmed(changed)


def test_talosconfig_without_its_key_is_a_plan_time_error(tf, infisical_lab):
    work = tf("bad-input")
    work.write(main_tf(infisical_lab, extra='  talosconfig = "context: castle\\n"\n'))
    result = work.apply(expect_fail=True)
    assert "talosconfig_key" in str(result)
    assert infisical_lab.secrets() == []


def test_path_without_leading_slash_is_a_plan_time_error(tf, infisical_lab):
    work = tf("bad-path")
    work.write(main_tf(infisical_lab, path="clusters/home"))
    result = work.apply(expect_fail=True)
    assert "path" in str(result)
    assert infisical_lab.secrets() == []


def test_a_new_comment_alone_is_written_with_a_new_version(tf, infisical_lab):
    work = tf("comment")
    work.write(main_tf(infisical_lab, extra='  comment = "first"\n'))
    work.apply()
    before = stored(infisical_lab)
    work.write(main_tf(infisical_lab, extra='  comment = "second"\n'))
    work.apply()
    after = stored(infisical_lab)
    assert after["comment"] == "second"
    assert after["value"] == before["value"]
    assert work.plan_is_empty()
